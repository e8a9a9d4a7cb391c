# lme4 nAGQ = 0 reference fits of the GLMM benchmark models that have Laplace references
# only (cbpp, Contraception (1|district) and (urban|district), grouseticks Poisson).
#
#   Rscript benchmarks/lme4_nagq0_reference.R      # from the repository root
#
# Writes tests/reference/glmm_nagq0/<model>_nagq0.json with the fields of
# tests/reference/glmm/*.json that tests/test_glmm_reference.py reads. nAGQ = 0 is
# lme4's fast mode: beta is estimated inside PIRLS with the random effects, and only
# theta is optimised; the logLik is the Laplace approximation at that (theta, beta).
# Tight controls (bobyqa rhoend 1e-10, tolPwrss 1e-14, as the Laplace references'
# "bobyqa_tight" fit) so that the optimum, not lme4's stopping rule, is recorded.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})

models <- list(
  list(id = "cbpp_nagq0", file = "cbpp.csv",
       formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
       family = "binomial", factors = c("herd", "period")),
  list(id = "contraception_nagq0", file = "Contraception.csv",
       formula = "use ~ age + I(age^2) + urban + livch + (1|district)",
       family = "binomial", factors = c("district", "livch", "urban")),
  list(id = "contraception_slope_nagq0", file = "Contraception.csv",
       formula = "use ~ age + I(age^2) + urban + livch + (urban|district)",
       family = "binomial", factors = c("district", "livch", "urban")),
  list(id = "grouseticks_poisson_nagq0", file = "grouseticks.csv",
       formula = "TICKS ~ YEAR + cHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)",
       family = "poisson", factors = c("YEAR", "BROOD", "INDEX", "LOCATION"))
)

# Levels sorted as Python's sorted() does: numerically for numeric codes, else C locale.
sorted_factor <- function(x) {
  lev <- if (is.numeric(x)) as.character(sort(unique(x))) else sort(unique(x), method = "radix")
  factor(as.character(x), levels = lev)
}

out_dir <- file.path("tests", "reference", "glmm_nagq0")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
control <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-14,
                        optCtrl = list(rhoend = 1e-10, maxfun = 1e6))
for (m in models) {
  path <- file.path("tests", "data", m$file)
  data <- read.csv(path)
  factors <- list()
  for (f in m$factors) {
    data[[f]] <- sorted_factor(data[[f]])
    factors[[f]] <- list(levels = levels(data[[f]]), reference = levels(data[[f]])[1],
                         nlevels = nlevels(data[[f]]), contrasts = "contr.treatment")
  }
  fam <- if (m$family == "binomial") binomial() else poisson()
  fit <- glmer(as.formula(m$formula), data = data, family = fam, nAGQ = 0, control = control)
  cf <- summary(fit)$coefficients
  fixed <- lapply(seq_len(nrow(cf)), function(i) list(
    name = rownames(cf)[i], estimate = cf[i, 1], se = cf[i, 2], z = cf[i, 3], p = cf[i, 4]))
  vc <- as.data.frame(VarCorr(fit))
  flat <- lapply(seq_len(nrow(vc)), function(i) list(
    group = vc$grp[i], var1 = vc$var1[i], var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i],
    vcov = vc$vcov[i], sdcor = vc$sdcor[i],
    kind = if (is.na(vc$var2[i])) "variance" else "covariance"))
  ll <- logLik(fit)
  record <- list(
    id = m$id,
    description = paste0(sub("_nagq0$", "", m$id), " with nAGQ = 0 (lme4's fast mode: beta ",
                         "estimated inside PIRLS, only theta optimised), tight controls"),
    data_file = paste0("shared/data/", m$file),
    data_md5 = unname(tools::md5sum(path)),
    formula = m$formula, fit_function = "lme4::glmer", family = m$family,
    family_R = fam$family, link = fam$link, nAGQ = 0L,
    control = "glmerControl(optimizer = 'bobyqa', tolPwrss = 1e-14, optCtrl = list(rhoend = 1e-10, maxfun = 1e6))",
    data_prep = list(factors = factors),
    software = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                    Matrix = as.character(packageVersion("Matrix"))),
    nobs = nobs(fit), ngroups = as.list(ngrps(fit)), isSingular = isSingular(fit),
    fixed_effects = fixed, variance_components_flat = flat,
    theta = list(names = names(getME(fit, "theta")), values = unname(getME(fit, "theta"))),
    logLik = as.numeric(ll), logLik_marginal = as.numeric(ll), logLik_df = attr(ll, "df"),
    optimizer_messages = fit@optinfo$conv$lme4$messages
  )
  writeLines(toJSON(record, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE),
             file.path(out_dir, paste0(m$id, ".json")))
  cat(m$id, sprintf("%.10f", as.numeric(ll)), "\n")
}
