# Extra repeated-measures cross-checks for mixedmodels (issue 15), made with nlme.
# Run from the repository root: Rscript tests/reference/repeated_extra/make_extra.R
# Each case is written to tests/reference/repeated_extra/<id>.json with `spec` in the
# project's spelling; the tests read only the JSON (they never need R).
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
data_dir <- "tests/data"
out_dir <- "tests/reference/repeated_extra"
ctl_lme <- lmeControl(maxIter = 500, msMaxIter = 500, tolerance = 1e-10, niterEM = 100,
                      msMaxEval = 2000, msTol = 1e-12, returnObject = TRUE)
ctl_gls <- glsControl(maxIter = 500, msMaxIter = 500, tolerance = 1e-10, msTol = 1e-12,
                      returnObject = TRUE)
rd <- function(f) read.csv(file.path(data_dir, f), stringsAsFactors = TRUE)

params <- function(fit) {
  out <- list()
  cs <- fit$modelStruct$corStruct
  if (!is.null(cs)) {
    v <- coef(cs, unconstrained = FALSE)
    if (inherits(cs, "corCompSymm")) out$rho <- unname(v)
    if (inherits(cs, "corAR1") || inherits(cs, "corCAR1") || inherits(cs, "corARMA")) out$phi <- unname(v)
    if (inherits(cs, "corSymm")) {
      C <- corMatrix(cs)[[1]]
      out$corr <- unname(C)
      vv <- coef(fit$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
      lv <- as.character(sort(as.numeric(names(vv))))
      out$sd_by_level <- as.list(setNames(fit$sigma * vv[lv], lv))
      out$levels <- lv
    }
  }
  vf <- fit$modelStruct$varStruct
  if (!is.null(vf)) {
    v <- coef(vf, unconstrained = FALSE, allCoef = TRUE)
    if (inherits(vf, "varPower")) out$delta <- unname(v)
    if (inherits(vf, "varExp")) out$exp_t <- unname(v)
    if (inherits(vf, "varIdent") && !inherits(cs, "corSymm")) {
      lv <- sort(names(v))
      out$sd_by_level <- as.list(setNames(fit$sigma * v[lv], lv))
    }
  }
  out$sigma <- fit$sigma
  out
}

write_case <- function(id, description, fit, spec, data_file) {
  tt <- summary(fit)$tTable
  # se: sqrt(diag(vcov(fit))), nlme's own covariance of the fixed effects (gls ML includes
  # nlme's N/(N-p) factor in varBeta; lme's summary() would add it for ML, vcov() does not)
  se <- sqrt(diag(vcov(fit)))
  fe <- lapply(seq_len(nrow(tt)), function(i)
    list(name = rownames(tt)[i], estimate = unname(tt[i, 1]), se = unname(se[i]),
         se_summary = unname(tt[i, 2])))
  res <- list(
    id = id, description = description, data_file = data_file,
    software = paste("nlme", packageVersion("nlme"), R.version.string),
    call = paste(deparse(fit$call), collapse = " "),
    spec = spec, reml = spec$reml, nobs = fit$dims$N,
    logLik = as.numeric(logLik(fit)), logLik_df = attr(logLik(fit), "df"),
    fixed_effects = fe, residual_sd = fit$sigma, structure_params = params(fit))
  if (inherits(fit, "lme")) res$random_cov <- lapply(pdMatrix(fit$modelStruct$reStruct),
                                                     function(m) unname(m * fit$sigma^2))
  writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
             file.path(out_dir, paste0(id, ".json")))
  cat(id, as.numeric(logLik(fit)), "\n")
}

sleep <- rd("sleepstudy.csv")
orth <- rd("Orthodont_rm.csv")
ovary <- rd("Ovary.csv")
dial <- rd("Dialyzer.csv"); dial$QB <- factor(dial$QB)

f <- lme(Reaction ~ Days, random = ~ Days | Subject, data = sleep,
         correlation = corAR1(form = ~ Days | Subject), method = "REML", control = ctl_lme)
write_case("sleepstudy_lme_slope_ar1_reml", "sleepstudy: random intercept and slope + AR(1) over Days", f,
           list(formula = "Reaction ~ Days + (Days | Subject)", correlation = "ar1(Days | Subject)",
                variance = NULL, reml = TRUE), "sleepstudy.csv")

f <- lme(Reaction ~ Days, random = ~ Days | Subject, data = sleep,
         correlation = corCAR1(form = ~ Days | Subject), weights = varExp(form = ~ Days),
         method = "ML", control = ctl_lme)
write_case("sleepstudy_lme_slope_car1_exp_ml", "sleepstudy ML: random slopes + CAR(1) + varExp(Days)", f,
           list(formula = "Reaction ~ Days + (Days | Subject)", correlation = "car1(Days | Subject)",
                variance = "exp(Days)", reml = FALSE), "sleepstudy.csv")

f <- lme(distance ~ age * Sex, random = ~ 1 | Subject, data = orth,
         correlation = corAR1(form = ~ visit | Subject), weights = varIdent(form = ~ 1 | Sex),
         method = "REML", control = ctl_lme)
write_case("orthodont_lme_ar1_identsex_reml", "Orthodont: random intercept + AR(1) + varIdent by Sex", f,
           list(formula = "distance ~ age*Sex + (1 | Subject)", correlation = "ar1(visit | Subject)",
                variance = "ident(Sex)", reml = TRUE), "Orthodont_rm.csv")

f <- lme(distance ~ age * Sex, random = ~ age | Subject, data = orth,
         weights = varPower(), method = "REML", control = ctl_lme)
write_case("orthodont_lme_slope_powerfitted_reml", "Orthodont: random slopes + varPower of fitted values (fixed point)", f,
           list(formula = "distance ~ age*Sex + (age | Subject)", correlation = NULL,
                variance = "power(fitted)", reml = TRUE), "Orthodont_rm.csv")

f <- gls(distance ~ age * Sex, data = orth, correlation = corAR1(form = ~ visit | Subject),
         weights = varPower(), method = "ML", control = ctl_gls)
write_case("orthodont_gls_ar1_powerfitted_ml", "Orthodont gls ML: AR(1) + varPower of fitted values", f,
           list(formula = "distance ~ age*Sex", correlation = "ar1(visit | Subject)",
                variance = "power(fitted)", reml = FALSE), "Orthodont_rm.csv")

f <- gls(follicles ~ s1 + c1, data = ovary, correlation = corCAR1(form = ~ Time | Mare),
         method = "REML", control = ctl_gls)
write_case("ovary_gls_car1_reml", "Ovary gls: continuous-time AR(1) over Time", f,
           list(formula = "follicles ~ s1 + c1", correlation = "car1(Time | Mare)",
                variance = NULL, reml = TRUE), "Ovary.csv")

f <- gls(rate ~ (pressure + p2 + p3 + p4) * QB, data = dial, weights = varExp(form = ~ pressure),
         correlation = corCompSymm(form = ~ 1 | Subject), method = "ML", control = ctl_gls)
write_case("dialyzer_gls_cs_exp_ml", "Dialyzer gls ML: compound symmetry + varExp(pressure)", f,
           list(formula = "rate ~ (pressure + p2 + p3 + p4)*C(QB)", correlation = "cs(1 | Subject)",
                variance = "exp(pressure)", reml = FALSE), "Dialyzer.csv")

f <- gls(distance ~ age * Sex, data = orth, correlation = corAR1(form = ~ visit | Subject),
         weights = varIdent(form = ~ 1 | Sex), method = "REML", control = ctl_gls)
write_case("orthodont_gls_ar1_identsex_reml", "Orthodont gls: AR(1) + varIdent by Sex", f,
           list(formula = "distance ~ age*Sex", correlation = "ar1(visit | Subject)",
                variance = "ident(Sex)", reml = TRUE), "Orthodont_rm.csv")

f <- lme(rate ~ (pressure + p2 + p3 + p4) * QB, random = ~ pressure + p2 | Subject, data = dial,
         weights = varPower(form = ~ pressure), correlation = corAR1(form = ~ index | Subject),
         method = "REML", control = ctl_lme)
write_case("dialyzer_lme_slopes_ar1_power_reml", "Dialyzer: random slopes + AR(1) over index + varPower(pressure) (Pinheiro & Bates sec. 5.4)", f,
           list(formula = "rate ~ (pressure + p2 + p3 + p4)*C(QB) + (pressure + p2 | Subject)",
                correlation = "ar1(index | Subject)", variance = "power(pressure)", reml = TRUE), "Dialyzer.csv")

f <- lme(Reaction ~ Days, random = ~ Days | Subject, data = sleep,
         correlation = corAR1(form = ~ Days | Subject), weights = varPower(),
         method = "ML", control = ctl_lme)
write_case("sleepstudy_lme_slope_ar1_powerfitted_ml", "sleepstudy ML: random slopes + AR(1) + varPower of fitted values", f,
           list(formula = "Reaction ~ Days + (Days | Subject)", correlation = "ar1(Days | Subject)",
                variance = "power(fitted)", reml = FALSE), "sleepstudy.csv")

f <- gls(distance ~ age * Sex, data = orth, correlation = corSymm(form = ~ visit | Subject),
         weights = varIdent(form = ~ 1 | visit), method = "ML", control = ctl_gls)
write_case("orthodont_gls_us_ml", "Orthodont gls ML: unstructured (corSymm + varIdent by visit)", f,
           list(formula = "distance ~ age*Sex", correlation = "us(visit | Subject)",
                variance = NULL, reml = FALSE), "Orthodont_rm.csv")
