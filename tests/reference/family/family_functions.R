## Reference values of R's and lme4's GLM family functions for tests/family/.
## Run from this folder:  Rscript family_functions.R  (writes family_functions.json)
## R 4.2.2, lme4 1.1.31, MASS 7.3-58.2. Inputs are fixed below; nothing is random.
suppressMessages({library(lme4); library(MASS)})

eta <- c(-800, -40, -36.5, -35, -30.5, -30, -20, -8.5, -8, -3, -0.5, 0, 0.25, 2.5, 8, 8.5,
         20, 30, 30.5, 35, 36.5, 40, 800)

## lme4's PIRLS evaluates the C++ family (glmFamily.cpp) through a glmResp object.
lme4_link <- function(fam, eta) {
  n <- length(eta)
  y <- if (fam$family == "binomial") rep(0.5, n) else rep(1, n)
  rr <- lme4:::glmResp$new(family = fam, y = y, weights = rep(1, n), offset = rep(0, n),
                           n = rep(1, n))
  rr$updateMu(eta)
  list(mu = rr$mu, mu_eta = rr$muEta(), variance = rr$variance())
}

links <- list()
for (lk in c("logit", "probit", "cloglog", "cauchit")) {
  fam <- binomial(link = lk)
  links[[paste0("binomial_", lk)]] <- list(
    family = "binomial", link = lk, eta = eta,
    R_linkinv = fam$linkinv(eta), R_mu_eta = fam$mu.eta(eta),
    lme4 = lme4_link(fam, eta))
}
eta_pos <- c(0.05, 0.5, 1, 2.5, 10)
for (lk in c("log", "identity", "sqrt")) {
  fam <- poisson(link = lk)
  e <- if (lk == "log") eta else eta_pos
  links[[paste0("poisson_", lk)]] <- list(
    family = "poisson", link = lk, eta = e,
    R_linkinv = fam$linkinv(e), R_mu_eta = fam$mu.eta(e),
    lme4 = lme4_link(fam, e))
}

## initialize: mustart as the family computes it (y, weights, nobs in its environment)
mustart <- function(fam, y, weights) {
  env <- new.env()
  env$y <- y; env$weights <- weights; env$nobs <- NROW(y); env$etastart <- NULL
  env$mustart <- NULL
  suppressWarnings(eval(fam$initialize, env))  # weights 0.5: "non-integer #successes"
  list(mustart = env$mustart, y = env$y, n = env$n, weights = env$weights)
}

cbpp_data <- read.csv("../../../src/mixedmodels/datasets/cbpp.csv")
succ <- cbpp_data$incidence[1:12]; size <- cbpp_data$size[1:12]
mu_cb <- c(0.05, 0.2, 0.1, 0.02, 0.3, 0.15, 0.08, 0.12, 0.5, 0.01, 0.25, 0.11)
bin01_y <- c(0, 1, 1, 0, 0, 1, 0, 1)
bin01_mu <- c(0.1, 0.9, 0.4, 0.6, 1e-12, 1 - 1e-9, 0.5, 0.25)
bin01_w <- c(1, 2, 0.5, 3, 1, 1, 0, 4)
prop_y <- c(0, 0.25, 0.5, 1, 0.2, 0.6)
prop_w <- c(4, 4, 2, 3, 5, 5)
prop_mu <- c(0.1, 0.3, 0.45, 0.8, 0.25, 0.5)
cnt_y <- c(0, 0, 1, 2, 3, 7, 12, 40, 150, 0, 5)
cnt_mu <- c(0.3, 4, 1.5, 2, 2.9, 5, 20, 35, 160, 1e-10, 5)
cnt_w <- c(1, 1, 2, 1, 0.5, 1, 1, 3, 1, 1, 0)

fam_case <- function(fam, y, mu, wt, n, init_y, init_w, nb_theta = NULL) {
  dev <- fam$dev.resids(y, mu, wt)
  list(family = fam$family, link = fam$link, theta = nb_theta, y = y, mu = mu, wt = wt, n = n,
       variance = fam$variance(mu), dev_resids = dev, deviance = sum(dev),
       aic = fam$aic(y, n, mu, wt, sum(dev)),
       initialize = mustart(fam, init_y, init_w))
}

families <- list(
  binomial_cbind = fam_case(binomial(), succ / size, mu_cb, size, size,
                            cbind(succ, size - succ), rep(1, 12)),
  binomial_01 = fam_case(binomial(), bin01_y, bin01_mu, rep(1, 8), rep(1, 8),
                         bin01_y, rep(1, 8)),
  binomial_01_weights = fam_case(binomial(), bin01_y, bin01_mu, bin01_w, rep(1, 8),
                                 bin01_y, bin01_w),
  binomial_proportion_weights = fam_case(binomial(), prop_y, prop_mu, prop_w, rep(1, 6),
                                         prop_y, prop_w),
  poisson = fam_case(poisson(), cnt_y, cnt_mu, cnt_w, rep(1, 11), cnt_y, cnt_w)
)
for (th in c(0.5, 3.7, 1e5)) {
  fam <- negative.binomial(th)
  families[[paste0("nb_", format(th))]] <- fam_case(fam, cnt_y, cnt_mu, cnt_w, rep(1, 11),
                                                    cnt_y, cnt_w, nb_theta = th)
}

out <- list(
  generated_by = "tests/reference/family/family_functions.R",
  software = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  MASS = as.character(packageVersion("MASS"))),
  double_eps = .Machine$double.eps,
  links = links, families = families)
## jsonlite prints at most 15 significant digits: write the numbers with 17 (they read back
## to the same doubles); Inf, -Inf and NaN, which JSON lacks, as the strings "Inf", "-Inf", "NaN".
to_json <- function(x, indent = "") {
  inner <- paste0(indent, "  ")
  if (is.null(x)) return("null")
  if (is.list(x)) {
    keys <- names(x)
    parts <- vapply(seq_along(x), function(i)
      paste0(inner, '"', keys[i], '": ', to_json(x[[i]], inner)), "")
    return(paste0("{\n", paste(parts, collapse = ",\n"), "\n", indent, "}"))
  }
  if (is.character(x)) {
    items <- paste0('"', x, '"')
  } else {
    items <- ifelse(is.finite(x), sprintf("%.17g", x), paste0('"', as.character(x), '"'))
  }
  if (length(x) == 1 && is.null(dim(x))) return(items)
  paste0("[", paste(items, collapse = ", "), "]")
}
writeLines(to_json(out), "family_functions.json")
