# Reference values for tests/diagnostics/test_influence.py (R + lme4 >= 1.1-27).
# Leave-one-group-out refits (lme4's influence.merMod), conditional hat values
# (hatvalues.merMod) and internally studentized residuals (rstudent.merMod), fitted
# with tight optimiser tolerances so the refits are optimal to ~1e-9.
# Run from this directory: Rscript influence_lme4.R  (writes influence_lme4.json)
suppressMessages(library(lme4))
library(jsonlite)
ctrl <- lmerControl(optimizer = "nloptwrap",
                    optCtrl = list(ftol_abs = 1e-14, ftol_rel = 1e-14, xtol_abs = 1e-12,
                                   xtol_rel = 1e-12, maxeval = 1e5),
                    calc.derivs = FALSE)
ratpup <- read.csv("../../../src/mixedmodels/datasets/ratpup.csv")
ratpup$litter <- factor(ratpup$litter)
ratpup$w <- ratpup$litsize / 10
sleep <- read.csv("../../../src/mixedmodels/datasets/sleepstudy.csv")
sleep$Subject <- factor(sleep$Subject)

one <- function(name, fit, groups) {
  inf <- influence(fit, groups = groups)
  sub <- inf[[sprintf("fixed.effects[-%s]", groups)]]
  vsub <- inf[[sprintf("vcov[-%s]", groups)]]
  vc <- inf[[sprintf("var.cov.comps[-%s]", groups)]]
  list(
    name = name,
    formula = deparse(formula(fit)),
    groups = groups,
    levels = as.character(inf$deleted),
    fixef = as.list(fixef(fit)),
    fixef_deleted = unname(split(unname(sub), row(sub))),
    se_deleted = unname(lapply(vsub, function(v) unname(sqrt(diag(v))))),
    var_cov_deleted = unname(split(unname(vc), row(vc))),
    var_cov_names = colnames(vc),
    var_cov = unname(inf$var.cov.comps),
    cooks_lme4 = unname(cooks.distance(inf)),
    dfbetas = unname(split(unname(dfbetas(inf)), row(dfbetas(inf)))),
    hat = unname(hatvalues(fit)),
    rstudent = unname(rstudent(fit)),
    cooks_obs = unname(cooks.distance(fit))
  )
}
out <- list(
  ratpup = one("ratpup",
               lmer(weight ~ treatment + sex + litsize + (1 | litter), ratpup, control = ctrl),
               "litter"),
  ratpup_weighted = one("ratpup_weighted",
               lmer(weight ~ treatment + sex + litsize + (1 | litter), ratpup, weights = w,
                    control = ctrl), "litter"),
  sleepstudy = one("sleepstudy",
               lmer(Reaction ~ Days + (Days | Subject), sleep, control = ctrl), "Subject"),
  R = R.version.string, lme4 = as.character(packageVersion("lme4"))
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "influence_lme4.json")
