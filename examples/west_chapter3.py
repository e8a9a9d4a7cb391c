"""West, Welch & Galecki (2014), Linear Mixed Models, chapter 3: the rat-pup analysis.

Walks the book's models and hypothesis tests with mixedmodels:

* Model 3.1   random litter intercept, homogeneous residual variance (REML)
* Model 3.1A  the same mean structure without the litter effect (REML)
* Model 3.2A  residual variance differs by treatment (nlme: varIdent(~1 | treatment))
* Model 3.2B  High and Low pooled against Control
* Model 3.3   Model 3.2B without the treatment x sex interaction (the final model)

and the hypotheses H3.1 - H3.6 (REML LRTs for covariance parameters, ML LRTs for fixed
effects). Run: ``python examples/west_chapter3.py``.
"""

from __future__ import annotations

import mixedmodels as mm

# The book codes sex with Male as the reference level (its sex1 = Female indicator).
MEAN_31 = "weight ~ treatment*C(sex, ref='Male') + litsize + (1 | litter)"
MEAN_33 = "weight ~ treatment + C(sex, ref='Male') + litsize + (1 | litter)"
POOLED = {"HighLow": ["High", "Low"]}


def main() -> None:
    pups = mm.load_dataset("ratpup")

    m31 = mm.lmer(MEAN_31, pups)
    m31a = mm.lm("weight ~ treatment*C(sex, ref='Male') + litsize", pups, reml=True)
    m32a = mm.lmer(MEAN_31, pups, residual_groups="treatment")
    m32b = mm.lmer(MEAN_31, pups, residual_groups="treatment", residual_pooling=POOLED)
    m33 = mm.lmer(MEAN_33, pups, residual_groups="treatment", residual_pooling=POOLED)

    print("Model 3.1\n", m31.summary(), sep="")
    print("H3.1: is there litter-to-litter variation? (3.1A vs 3.1, REML)")
    print(mm.compare(m31a, m31), "\n")

    print("Model 3.2A: residual SD by treatment")
    print(m32a.residual_sd.to_string(), "\n")
    print("H3.2: homogeneous (3.1) vs treatment-specific residual variances (3.2A)")
    print(mm.compare(m31, m32a), "\n")
    print("H3.3: pooled High/Low (3.2B) vs separate (3.2A)")
    print(mm.compare(m32b, m32a), "\n")
    print("H3.4: homogeneous (3.1) vs pooled-group heteroscedastic (3.2B)")
    print(mm.compare(m31, m32b), "\n")

    # Fixed-effect hypotheses are tested with ML fits (compare refits them by ML).
    print("H3.5: treatment x sex interaction (3.3 vs 3.2B, ML)")
    print(mm.compare(m33, m32b), "\n")
    no_treatment = mm.lmer(
        "weight ~ C(sex, ref='Male') + litsize + (1 | litter)",
        pups,
        residual_groups="treatment",
        residual_pooling=POOLED,
    )
    print("H3.6: treatment effect (3.3 without treatment vs 3.3, ML)")
    print(mm.compare(no_treatment, m33), "\n")

    print("Model 3.3 (final, REML)\n", m33.summary(), sep="")


if __name__ == "__main__":
    main()
