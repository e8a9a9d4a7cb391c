"""The methods paragraph, its references and the provenance of a report (linear models).

The paragraph is built from what the analysis did (estimation, tests, intervals, which
checks ran), so that every sentence is true of the report it is printed in; the reference
list holds exactly the works the paragraph cites.
"""

from __future__ import annotations

from typing import Any

from ..tables import Table
from .document import Bullets, Section, Text

__all__ = ["REFERENCES", "methods_paragraph", "methods_section"]

REFERENCES = {
    "bates": "Bates, D., Mächler, M., Bolker, B. & Walker, S. (2015). Fitting linear "
    "mixed-effects models using lme4. Journal of Statistical Software 67(1), 1-48.",
    "kuznetsova": "Kuznetsova, A., Brockhoff, P. B. & Christensen, R. H. B. (2017). lmerTest "
    "package: tests in linear mixed effects models. Journal of Statistical Software 82(13).",
    "satterthwaite": "Satterthwaite, F. E. (1946). An approximate distribution of estimates of "
    "variance components. Biometrics Bulletin 2(6), 110-114.",
    "kenward": "Kenward, M. G. & Roger, J. H. (1997). Small sample inference for fixed effects "
    "from restricted maximum likelihood. Biometrics 53(3), 983-997.",
    "self": "Self, S. G. & Liang, K.-Y. (1987). Asymptotic properties of maximum likelihood "
    "estimators and likelihood ratio tests under nonstandard conditions. JASA 82, 605-610.",
    "nakagawa": "Nakagawa, S., Johnson, P. C. D. & Schielzeth, H. (2017). The coefficient of "
    "determination R² and intra-class correlation coefficient from generalized linear "
    "mixed-effects models revisited and expanded. J. R. Soc. Interface 14, 20170213.",
    "lenth": "Lenth, R. V. emmeans: Estimated marginal means, aka least-squares means. R "
    "package, https://CRAN.R-project.org/package=emmeans.",
    "nieuwenhuis": "Nieuwenhuis, R., te Grotenhuis, M. & Pelzer, B. (2012). influence.ME: "
    "tools for detecting influential data in mixed effects models. The R Journal 4(2), 38-47.",
    "white": "White, H. (1980). A heteroskedasticity-consistent covariance matrix estimator "
    "and a direct test for heteroskedasticity. Econometrica 48(4), 817-838.",
    "pinheiro": "Pinheiro, J. C. & Bates, D. M. (2000). Mixed-Effects Models in S and S-PLUS. "
    "Springer (varIdent residual variances).",
    "west": "West, B. T., Welch, K. B. & Gałecki, A. T. (2014). Linear Mixed Models: A "
    "Practical Guide Using Statistical Software, 2nd ed., ch. 3 (the rat pup study). CRC "
    "Press.",
}


def methods_paragraph(a: Any) -> tuple[str, list[str]]:
    """The paragraph and the keys of the references it cites, in order of citation."""
    cited: list[str] = []

    def cite(key: str, text: str) -> str:
        if key not in cited:
            cited.append(key)
        return text

    fits = [m.fit for m in a.models]
    reml = all(f.reml for f in fits)
    est = "restricted maximum likelihood (REML)" if reml else "maximum likelihood"
    n = len(a.models)
    parts = [
        f"{'The linear mixed model was' if n == 1 else f'{n} linear mixed models were'} "
        f"fitted by {est} with the Python package mixedmodels, whose estimates agree with "
        f"R's lme4 {cite('bates', '(Bates et al. 2015)')}."
    ]
    if any(m.residual_groups for m in a.models):
        parts.append(
            "Models with a residual variance per group use nlme's varIdent structure "
            + cite("pinheiro", "(Pinheiro & Bates 2000).")
        )
    parts.append(
        "Fixed effects were tested by t and F tests (type III) with Satterthwaite's "
        f"denominator degrees of freedom {cite('satterthwaite', '(Satterthwaite 1946)')}, as "
        f"R's lmerTest computes them {cite('kuznetsova', '(Kuznetsova et al. 2017)')}; "
        "Kenward-Roger's adjustment "
        f"{cite('kenward', '(Kenward & Roger 1997)')} is available in the package "
        "(ddf='kenward-roger') but was not used here. Intervals for the fixed effects are "
        "95% Wald t intervals with the same degrees of freedom"
    )
    if all(m.vc_ci is not None for m in a.models):
        parts[-1] += (
            "; those for the variance parameters come from the profile likelihood, as lme4's "
            "confint(method = 'profile')."
        )
    elif any(m.vc_ci is not None for m in a.models):
        with_ci = ", ".join(m.label for m in a.models if m.vc_ci is not None)
        parts[-1] += (
            f"; those for the variance parameters of {with_ci} come from the profile "
            "likelihood, as lme4's confint(method = 'profile'); the other models are too "
            "large to profile in the report."
        )
    else:
        parts[-1] += "; the report gives no intervals for the variance parameters."
    if any(c.result is not None for c in a.comparisons):
        parts.append(
            "Nested models were compared by likelihood-ratio tests: on the REML criterion when "
            "their fixed effects are the same, otherwise after refitting by maximum "
            "likelihood; a variance tested at zero lies on the boundary of the parameter "
            "space, and its p-value comes from the chi-bar-square mixture "
            f"{cite('self', '(Self & Liang 1987)')}. AIC and BIC are given alongside."
        )
    if any(m.r2 is not None for m in a.models):
        parts.append(
            "Marginal and conditional R² follow Nakagawa, Johnson & Schielzeth "
            + cite("nakagawa", "(2017)")
            + ", with random slopes included as in performance::r2_nakagawa."
        )
    if any(m.emmeans for m in a.models):
        parts.append(
            "Estimated marginal means of the factors and their pairwise contrasts (Tukey-"
            "adjusted for factors with more than two levels) were computed as R's emmeans "
            f"does {cite('lenth', '(Lenth)')}."
        )
    checks = (
        f"The assumptions of {a.diagnosed.label} were checked on its conditional residuals "
        "(Shapiro-Wilk test, Q-Q plot with a simultaneous band"
    )
    if any(t.name.startswith("White") for t in a.tests):
        checks += f", White's test {cite('white', '(White 1980)')}"
    if any(" across " in t.name for t in a.tests):
        checks += ", Brown-Forsythe tests of equal variance across groups"
    checks += ") and its predicted random effects"
    if a.influence is not None:
        checks += (
            "; influence by leaving out each "
            f"{a.influence.group} group in turn (Cook's distance, "
            f"{cite('nieuwenhuis', 'Nieuwenhuis et al. 2012')})"
        )
    parts.append(checks + ".")
    if a.ratpup_path:
        parts.append(
            "Models 3.1 (M1), 3.2A, 3.2B and 3.3 and hypotheses H3.1-H3.5 follow West, "
            "Welch & Gałecki's "
            + cite("west", "(2014)")
            + " analysis of the rat pup data; M1-M4 are the models of the statsmodels "
            "tutorial on the same data."
        )
    return " ".join(parts), cited


def methods_section(a: Any) -> Section:
    """Methods (with references) and provenance (software, command, date, data checksum)."""
    text, cited = methods_paragraph(a)
    refs = Bullets(tuple((REFERENCES[k], "info") for k in cited), title="References")
    import pandas as pd

    p = a.provenance
    rows = [
        ("Software", p.get("software", "")),
        ("Command", p.get("command", "") or "(not recorded)"),
        ("Date", p.get("date", "")),
        ("Data", f"{a.data_name}: {len(a.data)} rows, {a.data.shape[1]} columns"),
        ("Data SHA-256", p.get("data_sha256", "")),
    ]
    prov = Table(
        "Provenance",
        pd.DataFrame({"value": [v for _, v in rows]}, index=pd.Index([k for k, _ in rows])),
        notes=(p.get("data_sha256_of", ""),) if p.get("data_sha256_of") else (),
    )
    return Section(
        "methods",
        "Methods and provenance",
        (Text(text), refs, prov),
    )
