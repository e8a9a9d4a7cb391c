"""The rat-pup tutorial, step by step, with mixedmodels.

The tutorial this follows was written for statsmodels (``smf.mixedlm``); each of its steps is
shown here with the statsmodels-style call (``mixedlm``, which prints the lme4 formula it
fits) and with the lme4-style call. Data: West, Welch & Galecki (2014), *Linear Mixed
Models*, ch. 3: birth weights of 322 rat pups in 27 litters, three dose groups.

Run: ``python examples/ratpup_tutorial.py`` (writes ratpup-tutorial.html).
"""

from __future__ import annotations

import mixedmodels as mm
from mixedmodels import describe, plots
from mixedmodels.compat import mixedlm
from mixedmodels.diagnostics.icc import icc
from mixedmodels.diagnostics.residual_tests import (
    levene,
    residual_groups,
    shapiro_wilk,
    white_test,
)
from mixedmodels.inference.anova import anova
from mixedmodels.inference.lrt import compare
from mixedmodels.report import analyze


def main() -> None:
    # 1. Look at the data: summary statistics by group (researchpy's summary_cont) and box plots.
    df = mm.load_dataset("ratpup")
    print(describe.summary_by(df, "weight", ["treatment", "sex"]))
    plots.boxplot_by(df, "weight", ["treatment", "sex"]).savefig("ratpup-boxplot.png")

    # 2. The tutorial's first model: a random intercept per litter, with the interaction.
    md = mixedlm("weight ~ C(treatment) * C(sex) + litsize", df, groups="litter")
    m1 = md.fit()  # statsmodels' MixedLMResults attributes (params, bse, cov_re, resid...)
    print(m1.summary())
    m1 = m1.mixedmodels_result  # the mixedmodels fit, for anova/compare
    print(anova(m1))  # the treatment:sex interaction: F(2, 302) = 0.47, p = 0.63

    # 3. Without the interaction (lme4 spelling this time), and its ICC.
    m2 = mm.lmer("weight ~ treatment + sex + litsize + (1 | litter)", df)
    print(icc(m2))  # 0.37: pups of one litter are alike

    # 4. A random effect of sex per litter. statsmodels' re_formula="1 + C(sex)" is
    #    lme4's (1 + sex | litter); its vc_formula={"sex": "0 + C(sex)"} WITHOUT re_formula
    #    drops the litter intercept and is (1 | litter:sex): a different model.
    m3 = mixedlm(
        "weight ~ C(treatment) + C(sex) + litsize", df, groups="litter", re_formula="1 + C(sex)"
    ).fit()
    print(m3.varcorr)
    mixedlm(
        "weight ~ C(treatment) + C(sex) + litsize",
        df,
        groups="litter",
        vc_formula={"sex": "0 + C(sex)"},
    )

    # 5. Likelihood-ratio tests: interaction (ML refits), random slope (boundary p-value).
    print(compare(m2, m1))
    m3_lme4 = mm.lmer("weight ~ treatment + sex + litsize + (1 + sex | litter)", df)
    print(compare(m2, m3_lme4))

    # 6. Assumptions of the chosen model: normality and equal variance of the residuals.
    print(shapiro_wilk(m2))
    print(white_test(m2))
    print(levene(m2, residual_groups(df, m2, ["treatment"])))
    plots.diagnostics(m2).savefig("ratpup-diagnostics.png")

    # 7. The residual variance differs by treatment: give the groups their own variance
    #    (West et al.'s Model 3.2B pools High and Low).
    m4 = mm.lmer(
        "weight ~ treatment + sex + litsize + (1 | litter)",
        df,
        residual_groups="treatment",
        residual_pooling={"High/Low": ["High", "Low"]},
    )
    print(m4.summary())

    # 8. Everything above in one report.
    analyze().save("ratpup-tutorial.html", force=True)


if __name__ == "__main__":
    main()
