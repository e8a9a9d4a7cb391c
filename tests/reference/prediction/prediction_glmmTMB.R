# Reference values for tests/inference/test_prediction.py: glmmTMB's predict(se.fit = TRUE)
# on sleepstudy, Reaction ~ Days + (Days | Subject).
#
# "fixed": the covariance parameters and sigma held at lme4's REML estimates (glmmTMB's
#   map=), beta estimated: TMB's joint covariance of (beta-hat, b-hat - b) is then the
#   Henderson prediction error variance at known covariance parameters, what mixedmodels
#   computes. New subjects get b ~ N(0, Sigma) in glmmTMB, so their se.fit^2 includes
#   z' Sigma z (mixedmodels: se_pred^2 - sigma^2).
# "free": glmmTMB's own REML fit, whose se.fit adds the uncertainty of the covariance
#   parameters (delta method): shown for the size of that difference.
# Run from this directory: Rscript prediction_glmmTMB.R  (writes prediction_glmmTMB.json)
suppressMessages({library(lme4); library(glmmTMB)})
library(jsonlite)
sleep <- read.csv("../../../src/mixedmodels/datasets/sleepstudy.csv")
sleep$Subject <- factor(sleep$Subject)
ctrl <- lmerControl(optimizer = "nloptwrap", calc.derivs = FALSE,
                    optCtrl = list(ftol_abs = 1e-14, ftol_rel = 1e-14, xtol_abs = 1e-12,
                                   xtol_rel = 1e-12, maxeval = 1e5))
m <- lmer(Reaction ~ Days + (Days | Subject), sleep, control = ctrl)
vc <- as.data.frame(VarCorr(m))
sd0 <- vc$sdcor[1]; sd1 <- vc$sdcor[2]; rho <- vc$sdcor[3]; s <- sigma(m)
newdata <- data.frame(Days = c(0, 5, 9, 3, 5, 0),
                      Subject = c("308", "308", "309", "352", "999", "999"))
start <- list(theta = c(log(sd0), log(sd1), rho / sqrt(1 - rho^2)), betad = 2 * log(s))
fixed <- glmmTMB(Reaction ~ Days + (Days | Subject), sleep, REML = FALSE, start = start,
                 map = list(theta = factor(c(NA, NA, NA)), betad = factor(NA)))
stopifnot(abs(sigma(fixed) - s) < 1e-10)
pf <- predict(fixed, newdata, se.fit = TRUE, allow.new.levels = TRUE)
pf0 <- predict(fixed, newdata, se.fit = TRUE, re.form = NA)
free <- glmmTMB(Reaction ~ Days + (Days | Subject), sleep, REML = TRUE)
pr <- predict(free, newdata, se.fit = TRUE, allow.new.levels = TRUE)
out <- list(
  formula = "Reaction ~ Days + (Days | Subject)",
  newdata = list(Days = newdata$Days, Subject = as.character(newdata$Subject)),
  lme4_fixef = unname(fixef(m)), lme4_sigma = s,
  fixed = list(fit = unname(pf$fit), se = unname(pf$se.fit),
               fit_population = unname(pf0$fit), se_population = unname(pf0$se.fit)),
  free = list(fit = unname(pr$fit), se = unname(pr$se.fit)),
  R = R.version.string, glmmTMB = as.character(packageVersion("glmmTMB")),
  lme4 = as.character(packageVersion("lme4"))
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "prediction_glmmTMB.json")
