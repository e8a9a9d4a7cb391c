# R 4.2.2, lme4 1.1-31. Reference for tests/engine/test_pirls_rounding_floor.py: grouseticks with
# the raw (uncentred) YEAR and HEIGHT, so that X is ill-conditioned, fitted by lme4 with tight
# controls; the same model with centred covariates gives a well-conditioned covariance of the
# slopes (invariant to centring) and of the intercept after the linear change of variables.
suppressMessages(library(lme4)); library(jsonlite)
d <- read.csv("src/mixedmodels/datasets/grouseticks.csv")
d$LOCATION <- factor(d$LOCATION); d$cY <- d$YEAR - 96; d$cH <- d$HEIGHT - 460
ctl <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12,
                    optCtrl = list(maxfun = 1e5, rhoend = 1e-12),
                    check.conv.grad = "ignore", check.conv.hess = "ignore")
raw <- glmer(TICKS ~ YEAR + HEIGHT + (1 | LOCATION), data = d, family = poisson, control = ctl)
cen <- glmer(TICKS ~ cY + cH + (1 | LOCATION), data = d, family = poisson, control = ctl)
nb <- glmer.nb(TICKS ~ YEAR + HEIGHT + (1 | LOCATION), data = d)  # default controls: lme4 warns
out <- list(
  nb_default_controls = list(loglik = as.numeric(logLik(nb)), theta = getME(nb, "glmer.nb.theta")),
  formula = "TICKS ~ YEAR + HEIGHT + (1|LOCATION)", family = "poisson",
  loglik = as.numeric(logLik(raw)), fixef = unname(fixef(raw)), theta = unname(getME(raw, "theta")),
  se_lme4_default_hessian = unname(sqrt(diag(as.matrix(vcov(raw))))),
  centred = list(formula = "TICKS ~ cY + cH + (1|LOCATION)", centres = c(96, 460),
                 loglik = as.numeric(logLik(cen)), fixef = unname(fixef(cen)),
                 vcov = unname(as.matrix(vcov(cen))))
)
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/glmm_illconditioned/grouseticks_uncentred.json")
