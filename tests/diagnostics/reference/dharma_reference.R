# Reference values of DHARMa's residual tests on fixed simulations.
#
# DHARMa is not on CRAN's mirror here, so its R sources are loaded from a checkout:
#   Rscript tests/diagnostics/reference/dharma_reference.R /path/to/DHARMa/DHARMa/R
# Made with DHARMa 0.5.1 (git 746f969c743b410aac83ec7cddfa4365fad4c977), R 4.2.2.
#
# Inputs: dharma_inputs.json (make_dharma_inputs.py). For each case, createDHARMa()
# computes the PIT residuals with R's random numbers; testUniformity, testDispersion
# (type "DHARMa", all three alternatives), testZeroInflation and testOutliers (type
# "binomial") run on them. The Python test feeds the same simulations and R's residuals
# to SimulatedResiduals and compares.
args <- commandArgs(trailingOnly = TRUE)
src <- args[1]
for (f in c("DHARMa.R", "helper.R", "tests.R", "random.R")) source(file.path(src, f))
here <- dirname(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE)))
inputs <- jsonlite::fromJSON(file.path(here, "dharma_inputs.json"), simplifyMatrix = TRUE)
out <- list()
for (name in names(inputs)) {
  case <- inputs[[name]]
  sims <- matrix(as.numeric(case$simulated), nrow = length(case$observed))
  res <- createDHARMa(simulatedResponse = sims, observedResponse = case$observed,
                      fittedPredictedResponse = case$expected, integerResponse = TRUE,
                      seed = 123)
  res$refit <- FALSE
  disp <- lapply(c("two.sided", "greater", "less"), function(a)
    testDispersion(res, alternative = a, plot = FALSE))
  zi <- testZeroInflation(res, plot = FALSE)
  unif <- testUniformity(res, plot = FALSE)
  outl <- testOutliers(res, type = "binomial", plot = FALSE)
  out[[name]] <- list(
    scaled = as.numeric(res$scaledResiduals),
    uniformity = list(D = unname(unif$statistic), p = unif$p.value),
    dispersion = lapply(disp, function(t) list(alternative = t$alternative,
                                               ratio = unname(t$statistic), p = t$p.value)),
    zero_inflation = list(ratio = unname(zi$statistic), p = zi$p.value),
    outliers = list(count = unname(outl$statistic), p = outl$p.value)
  )
}
writeLines(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA),
           file.path(here, "dharma_reference.json"))
