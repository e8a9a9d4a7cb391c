# confint(glmer, method = "profile") for cbpp (lme4 1.1.31, R 4.2.2): Rscript lme4_profile_cbpp.R > lme4_profile_cbpp.txt
# lme4 interpolates its profile with splines; tests allow 1% of the Wald SE.
suppressMessages(library(lme4))
cbpp <- read.csv("../../data/cbpp.csv"); cbpp$period <- factor(cbpp$period)
ctl <- glmerControl(optimizer="bobyqa", optCtrl=list(rhoend=1e-10, maxfun=1e6), tolPwrss=1e-12)
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial, control=ctl)
ci <- confint(m, method="profile")
g <- function(x) paste(sprintf("%.10g", x), collapse=" ")
for (i in seq_len(nrow(ci))) cat(rownames(ci)[i], "|", g(ci[i, ]), "\n")
