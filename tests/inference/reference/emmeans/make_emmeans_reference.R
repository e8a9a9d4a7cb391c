# Reference values for mixedmodels' emmeans: estimated marginal means and pairwise
# contrasts from R's emmeans on lmerTest fits of the datasets embedded in mixedmodels.
#
# Run from this folder:   Rscript make_emmeans_reference.R
# Needs: lme4, lmerTest, pbkrtest, emmeans, jsonlite (Debian: r-cran-emmeans r-cran-lme4
# r-cran-lmertest r-cran-pbkrtest). Writes one JSON file per case, <case>.json, with the
# package versions, the call, the means (emmean, SE, df, lower.CL, upper.CL) and the
# pairwise contrasts for each p-value adjustment (estimate, SE, df, t.ratio, p.value).
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(pbkrtest)
  library(emmeans)
  library(jsonlite)
})

data_dir <- file.path("..", "..", "..", "..", "src", "mixedmodels", "datasets")
read_dataset <- function(name) {
  read.csv(file.path(data_dir, paste0(name, ".csv")), stringsAsFactors = TRUE)
}

ratpup <- read_dataset("ratpup")
ratpup$litter <- factor(ratpup$litter)
orthodont <- read_dataset("Orthodont")
cake <- read_dataset("cake")
cake$temperature <- factor(cake$temperature)  # levels 175 ... 225, treatment contrasts
cake$replicate <- factor(cake$replicate)

versions <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")),
  pbkrtest = as.character(packageVersion("pbkrtest")),
  emmeans = as.character(packageVersion("emmeans"))
)

fits <- list(
  ratpup_a = list(
    formula = "weight ~ treatment*sex + litsize + (1|litter)", data = "ratpup", REML = TRUE
  ),
  ratpup_a_ml = list(
    formula = "weight ~ treatment*sex + litsize + (1|litter)", data = "ratpup", REML = FALSE
  ),
  ratpup_b = list(
    formula = "weight ~ treatment + sex + litsize + (1|litter)", data = "ratpup", REML = TRUE
  ),
  ratpup_log = list(
    formula = "weight ~ treatment + sex + log(litsize) + (1|litter)", data = "ratpup",
    REML = TRUE
  ),
  orthodont = list(
    formula = "distance ~ age*Sex + (age|Subject)", data = "Orthodont", REML = TRUE
  ),
  cake = list(
    formula = "angle ~ recipe*temperature + (1|recipe:replicate)", data = "cake", REML = TRUE
  )
)
datasets <- list(ratpup = ratpup, Orthodont = orthodont, cake = cake)

# case name -> fit, specs, by, ddf, optional at
cases <- list(
  list(name = "ratpup_a_treatment_by_sex_satterthwaite", fit = "ratpup_a",
       specs = "treatment", by = "sex", ddf = "satterthwaite"),
  list(name = "ratpup_a_treatment_by_sex_kenward-roger", fit = "ratpup_a",
       specs = "treatment", by = "sex", ddf = "kenward-roger"),
  list(name = "ratpup_a_treatment_satterthwaite", fit = "ratpup_a",
       specs = "treatment", ddf = "satterthwaite"),
  list(name = "ratpup_a_treatment_kenward-roger", fit = "ratpup_a",
       specs = "treatment", ddf = "kenward-roger"),
  list(name = "ratpup_a_sex_by_treatment_satterthwaite", fit = "ratpup_a",
       specs = "sex", by = "treatment", ddf = "satterthwaite"),
  list(name = "ratpup_a_treatment_sex_satterthwaite", fit = "ratpup_a",
       specs = c("treatment", "sex"), ddf = "satterthwaite"),
  list(name = "ratpup_a_ml_treatment_by_sex_satterthwaite", fit = "ratpup_a_ml",
       specs = "treatment", by = "sex", ddf = "satterthwaite"),
  list(name = "ratpup_a_treatment_asymptotic", fit = "ratpup_a",
       specs = "treatment", ddf = "asymptotic"),
  list(name = "ratpup_b_treatment_by_sex_satterthwaite", fit = "ratpup_b",
       specs = "treatment", by = "sex", ddf = "satterthwaite"),
  list(name = "ratpup_b_treatment_kenward-roger", fit = "ratpup_b",
       specs = "treatment", ddf = "kenward-roger"),
  list(name = "ratpup_b_treatment_at_litsize10_satterthwaite", fit = "ratpup_b",
       specs = "treatment", ddf = "satterthwaite", at = list(litsize = 10)),
  list(name = "ratpup_log_treatment_satterthwaite", fit = "ratpup_log",
       specs = "treatment", ddf = "satterthwaite"),
  list(name = "orthodont_sex_satterthwaite", fit = "orthodont",
       specs = "Sex", ddf = "satterthwaite"),
  list(name = "cake_temperature_satterthwaite", fit = "cake",
       specs = "temperature", ddf = "satterthwaite"),
  list(name = "cake_recipe_by_temperature_kenward-roger", fit = "cake",
       specs = "recipe", by = "temperature", ddf = "kenward-roger")
)

fitted <- lapply(fits, function(f) {
  lmerTest::lmer(as.formula(f$formula), data = datasets[[f$data]], REML = f$REML)
})

adjusts <- c("tukey", "holm", "bonferroni", "none")

for (case in cases) {
  fit <- fitted[[case$fit]]
  rhs <- paste(case$specs, collapse = " * ")
  if (!is.null(case$by)) rhs <- paste(rhs, "|", paste(case$by, collapse = " * "))
  spec_formula <- as.formula(paste("~", rhs))
  args <- list(fit, spec_formula, lmer.df = case$ddf)
  if (!is.null(case$at)) args$at <- case$at
  emm <- do.call(emmeans, args)
  means <- as.data.frame(summary(emm, level = 0.95))
  for (col in c(case$specs, case$by)) means[[col]] <- as.character(means[[col]])
  contrasts <- list()
  for (adj in adjusts) {
    pr <- as.data.frame(summary(pairs(emm), adjust = adj))
    for (col in c("contrast", case$by)) pr[[col]] <- as.character(pr[[col]])
    contrasts[[adj]] <- pr
  }
  out <- list(
    name = case$name,
    versions = versions,
    fit = c(fits[[case$fit]], list(theta = unname(getME(fit, "theta")),
                                   fixef = as.list(fixef(fit)))),
    call = paste0("emmeans(fit, ", deparse(spec_formula), ", lmer.df = \"", case$ddf, "\"",
                  if (is.null(case$at)) "" else paste0(", at = ", deparse(case$at)), ")"),
    specs = case$specs,
    by = if (is.null(case$by)) list() else case$by,
    ddf = case$ddf,
    at = if (is.null(case$at)) structure(list(), names = character(0)) else case$at,
    level = 0.95,
    means = means,
    contrasts = contrasts
  )
  write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, dataframe = "columns",
               na = "null"),
        paste0(case$name, ".json"))
  cat("wrote", paste0(case$name, ".json"), "\n")
}
