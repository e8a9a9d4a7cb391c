# lme4 fits with non-canonical links, AGQ with them, an offset and a proportion with
# weights = trials, to check mixedmodels beyond the canonical-link reference files.
# Run: Rscript lme4_links_offsets.R > lme4_links_offsets.txt   (lme4 1.1.31, R 4.2.2, Debian 12)
# PIRLS converged (tolPwrss = 1e-12) and bobyqa run to rhoend = 1e-10, as tests/reference/glmm.
suppressMessages(library(lme4))
d <- "../../data/"
cbpp <- read.csv(paste0(d, "cbpp.csv")); cbpp$period <- factor(cbpp$period)
gt <- read.csv(paste0(d, "grouseticks.csv")); gt$YEAR <- factor(gt$YEAR)
ct <- read.csv(paste0(d, "Contraception.csv"))
ctl <- glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e6),
                    tolPwrss = 1e-12)
out <- function(name, m) {
  g <- function(x) paste(sprintf("%.17g", x), collapse = " ")
  cat(name, "|", g(logLik(m)), "|", g(fixef(m)), "|", g(sqrt(diag(as.matrix(vcov(m))))),
      "|", g(getME(m, "theta")), "\n")
}
out("cbpp_probit", glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                         binomial("probit"), control = ctl))
out("cbpp_cloglog_agq9", glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                               binomial("cloglog"), nAGQ = 9, control = ctl))
out("grouseticks_offset", glmer(TICKS ~ YEAR + offset(log(HEIGHT)) + (1 | LOCATION), gt,
                                poisson, control = ctl))
out("contraception_probit_agq5", glmer(use ~ age + urban + (1 | district), ct,
                                       binomial("probit"), nAGQ = 5, control = ctl))
cbpp$prop <- cbpp$incidence / cbpp$size
out("cbpp_proportion_weights", glmer(prop ~ period + (1 | herd), cbpp, binomial,
                                     weights = size, control = ctl))
