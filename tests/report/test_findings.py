"""Issue 16 item 5: every rule of the findings, on rat-pup, sleepstudy, Orthodont and data
the findings were not written for (cake, Penicillin, a simulated design): each sentence is
produced only when its condition holds, and says what is true of that data."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from mixedmodels.report import analyze
from mixedmodels.report.findings import fixed_effect_sentences


@pytest.fixture(scope="module")
def sleep():
    return analyze("sleepstudy", ["Reaction ~ Days + (Days | Subject)"])


@pytest.fixture(scope="module")
def ortho():
    return analyze("Orthodont", ["distance ~ age * Sex + (1 | Subject)"])


@pytest.fixture(scope="module")
def cake():
    # Not a data set the findings were written for: a factor × covariate interaction whose
    # covariate (temp, 175-225) never reaches 0.
    return analyze("cake", ["angle ~ recipe * temp + (1 | recipe:replicate)"], describe_by="recipe")


@pytest.fixture(scope="module")
def penicillin():
    # Crossed grouping factors, no fixed effect besides the intercept.
    return analyze("Penicillin", ["diameter ~ 1 + (1 | plate) + (1 | sample)"])


@pytest.fixture(scope="module")
def simulated():
    # Two centred covariates (0 inside both ranges) that interact, one grouping factor.
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(30), 8)
    x = rng.uniform(-2, 2, g.size)
    z = rng.uniform(-1, 1, g.size)
    y = 1 + 0.8 * x + 0.5 * z + 0.6 * x * z + rng.normal(0, 0.7, 30)[g] + rng.normal(0, 1, g.size)
    data = pd.DataFrame({"y": y, "x": x, "z": z, "g": [f"g{k}" for k in g]})
    return analyze(data, ["y ~ x * z + (1 | g)"])


@pytest.fixture(scope="module")
def all_reports(ratpup_report, sleep, ortho, cake, penicillin, simulated):
    return {
        "ratpup": ratpup_report,
        "sleepstudy": sleep,
        "Orthodont": ortho,
        "cake": cake,
        "Penicillin": penicillin,
        "simulated": simulated,
    }


def _text(report) -> str:
    return " ".join(report.findings)


# ------------------------------------------------------------------ interactions
def test_interaction_sentence_only_for_models_with_one_and_true(all_reports):
    for name, r in all_reports.items():
        a = r.analysis
        text = _text(r)
        first = next((m for m in a.models if m.interaction_tests is not None), None)
        if first is None:
            assert "interaction is significant" not in text and "No evidence of a" not in text
            continue
        for term, row in first.interaction_tests.iterrows():
            pretty = " × ".join(
                re.sub(r"C\((\w+).*", r"\1", t.strip()) for t in str(term).split(":")
            )
            if row["p"] < a.alpha:
                assert f"The {pretty} interaction is significant in {first.label}" in text, name
            else:
                assert f"No evidence of a {pretty} interaction in {first.label}" in text, name
        assert "C(" not in " ".join(f for f in r.findings if "interaction" in f[:60])
    assert "The age × Sex interaction is significant in M1" in _text(all_reports["Orthodont"])
    assert "No evidence of a treatment × sex interaction in M1" in _text(all_reports["ratpup"])


# ------------------------------------------------------------------ fixed effects
def test_each_fixed_effect_read_by_its_structure(all_reports):
    for name, r in all_reports.items():
        a = r.analysis
        items = fixed_effect_sentences(a.data, a.response, a.diagnosed.coef)
        coef = a.diagnosed.coef.drop(index="(Intercept)", errors="ignore")
        assert len(items) == len(coef), name
        for (text, p, extrapolated), (term, row) in zip(items, coef.iterrows(), strict=True):
            assert p == row["p"]
            assert (row["estimate"] > 0) == (" higher by " in text) or ":" in str(term)
            assert ("extrapolation" in text) == (extrapolated is not None), (name, text)
        sig = next((f for f in r.findings if f.startswith("Significant fixed effects")), "")
        nonsig = next((f for f in r.findings if f.startswith("No evidence (at")), "")
        for text, p, _ in items:
            assert (text in sig) == (p < a.alpha) and (text in nonsig) == (p >= a.alpha), text


def test_numeric_covariate_is_a_slope_never_a_factor(sleep, ortho):
    assert "Days: each extra unit of Days goes with Reaction higher by 10.5" in _text(sleep)
    assert "interaction:" not in _text(sleep)
    text = _text(ortho)
    assert "age =" not in text.replace("age = 0", "").replace("age = 11", "")
    # With age × Sex the age coefficient is the slope of the reference sex only.
    assert (
        "age: each extra unit of age goes with distance higher by 0.48 (interaction: the "
        "slope at Sex = Female only)" in text
    )


def test_factor_effect_at_a_covariate_outside_its_range_is_not_read(ortho, cake):
    text = _text(ortho)
    assert (
        "Sex = Male (vs Female): distance lower by 1.03 (interaction: this is the difference "
        "at age = 0 only)"
    ) in text
    assert "age = 0 lies outside the observed 8 to 14: an extrapolation, not interpreted" in text
    # ...and the difference inside the range comes from the marginal means (at the mean age).
    em = dict(ortho.analysis.diagnosed.emmeans)["Sex"]
    assert em.covariates["age"] == pytest.approx(11)
    est = em.contrasts["estimate"].iloc[0]
    assert "at age = 11, the Sex differences in distance" in text
    assert f"Female - Male: {est:.3g}" in text
    text = _text(cake)
    assert "temp = 0 lies outside the observed 175 to 225" in text
    assert "(recipeB:temp): the recipe = B vs A difference changes by" in text
    assert "at temp = 200, the recipe differences in angle" in text


def test_covariate_interaction_inside_the_range_is_not_called_an_extrapolation(simulated):
    text = _text(simulated)
    assert "(interaction: the slope at z = 0 only)" in text
    assert "(interaction: the slope at x = 0 only)" in text
    assert "extrapolation" not in text and "outside the observed" not in text
    assert "interaction x × z (x:z): the slope of x changes by" in text
    assert "with each extra unit of z" in text


def test_factor_without_interaction_is_a_difference_with_the_rest_held_fixed(ratpup_report):
    text = _text(ratpup_report)
    assert "sex = Female (vs Male): weight lower by 0.359, other predictors held fixed" in text
    assert "treatment = High (vs Control): weight lower by 0.859" in text


# ------------------------------------------------------------------ wording of tests
FORBIDDEN = (
    "no effect",
    "is similar",
    "look normal",
    "is enough",
    "not significant",
    "are equal",
    "no difference",
)


def test_non_significant_tests_say_no_evidence(all_reports):
    for name, r in all_reports.items():
        a = r.analysis
        text = _text(r)
        for word in FORBIDDEN:
            assert word not in text.lower(), (name, word)
        for t in a.tests:
            if t.pvalue >= a.alpha and " across " in t.name:
                across = t.name.split(" across ", 1)[1]
                assert (
                    f"No evidence that the residual variance of {a.diagnosed.label} "
                    f"differs across {across}" in text
                )
            if t.pvalue < a.alpha and " across " in t.name:
                across = t.name.split(" across ", 1)[1]
                assert f"differs across {across} (" in text
        sw = next(t for t in a.tests if t.name.startswith("Shapiro"))
        assert ("are not normal" in text) == (sw.pvalue < a.alpha)
        assert ("No evidence against normal residuals" in text) == (sw.pvalue >= a.alpha)


# ------------------------------------------------------------------ one model vs several
def test_one_model_has_no_comparison_sentences(sleep, ortho):
    for r in (sleep, ortho):
        assert not any("likelihood ratio" in f for f in r.findings)
        d = r.to_dict()
        comp = next(s for s in d["sections"][2]["sections"] if s["id"] == "model-comparison")
        assert comp["intro"] == "One model: nothing to compare it with."


def test_comparison_sentences_follow_the_tests(ratpup_report):
    a = ratpup_report.analysis
    text = _text(ratpup_report)
    for c in a.comparisons:
        if c.result is None:
            continue
        p = c.result.table["Pr(>Chisq)"].iloc[1]
        big = str(c.result.table.index[1])
        if p < a.alpha:
            assert f"evidence for the larger model {big}" in text
        else:
            assert re.search(rf"no evidence that the larger model {big}\b", text)
    # Models that cannot be tested against each other are compared by AIC.
    m2, m3 = a.model("M2"), a.model("M3")
    best = "M2" if m2.ml_fit.aic < m3.ml_fit.aic else "M3"
    assert f"{best} has the smaller AIC of the two untested models M2 and M3" in text


def test_checked_model_versus_the_preferred_one():
    rep = analyze(
        "Orthodont",
        ["distance ~ age + Sex + (1 | Subject)", "distance ~ age * Sex + (1 | Subject)"],
        diagnose=0,
    )
    (c,) = rep.analysis.comparisons
    assert c.result.table["Pr(>Chisq)"].iloc[1] < 0.05  # the interaction model is preferred
    assert any(
        f.startswith(
            "The assumptions below are checked on M1, but the likelihood-ratio tests prefer M2"
        )
        for f in rep.findings
    )


def test_last_model_described_when_it_ends_the_path(ratpup_report, ortho):
    a = ratpup_report.analysis
    m7 = a.model("M7")
    text = _text(ratpup_report)
    assert "The last model, M7 (Model 3.3), is not rejected by its likelihood-ratio tests" in text
    b = m7.coef.loc["sexFemale", "estimate"]
    assert f"sex = Female (vs Male): weight lower by {abs(b):.3g}" in text
    assert not any(f.startswith("The last model") for f in ortho.findings)  # one model


def test_last_model_not_described_when_a_test_prefers_another():
    rep = analyze(
        "Orthodont",
        ["distance ~ age * Sex + (1 | Subject)", "distance ~ age + Sex + (1 | Subject)"],
    )
    (c,) = rep.analysis.comparisons
    assert c.result.table["Pr(>Chisq)"].iloc[1] < 0.05  # the first (larger) model wins
    assert rep.analysis.diagnosed.label == "M2"
    assert not any(f.startswith("The last model") for f in rep.findings)
    assert any(
        "are checked on M2, but the likelihood-ratio tests prefer M1" in f for f in rep.findings
    )


def test_no_warning_when_the_checked_model_is_the_preferred_one(ratpup_report):
    assert not any("are checked on" in f for f in ratpup_report.findings)


# ------------------------------------------------------------------ R², ICC
def test_r2_sentence(all_reports):
    for name, r in all_reports.items():
        m = r.analysis.diagnosed
        r2 = m.fit.r2()
        text = _text(r)
        assert f"conditional R² = {float(f'{r2.conditional:.3g}'):g}" in text, name
        if len(m.fit.fixef) > 1:
            assert f"marginal R² = {float(f'{r2.marginal:.3g}'):g}" in text, name
        else:
            assert "no fixed effect besides the intercept" in text


def test_icc_sentence_for_one_and_for_crossed_factors(ortho, penicillin, sleep):
    assert "two observations from the same Subject have correlation 0.632" in _text(ortho)
    text = _text(penicillin)
    icc = penicillin.analysis.diagnosed.icc.table["icc"]
    assert (
        f"observations that share a plate and no other grouping level have correlation "
        f"{icc['plate']:.3g}" in text
    )
    assert "ICC" not in _text(sleep)  # a random slope: no single ICC


# ------------------------------------------------------------------ what to do next
def test_next_steps(ratpup_report, sleep, ortho):
    text = _text(ratpup_report)
    assert "is modelled in M5 (Model 3.2A), M6 (Model 3.2B), M7 (Model 3.3)" in text
    assert "residual_groups=<factor>" not in _text(sleep)
    unequal_only_by_group = [t for t in sleep.analysis.tests if " across " in t.name]
    if any(t.pvalue < 0.05 for t in unequal_only_by_group):
        assert "The residual spread differs between Subject groups" in _text(sleep)
    assert "Try next" not in _text(ortho)  # nothing failed that a variance model would fix


# ------------------------------------------------------------------ nothing of rat-pup elsewhere
def test_no_ratpup_text_on_other_data(all_reports):
    for name, r in all_reports.items():
        html = r.to_markdown()
        for word in ("West", "litter", "3.2A", "rat pup", "tutorial"):
            assert (word in html) == (name == "ratpup"), (name, word)


# ------------------------------------------------------------------ methods, provenance
def test_methods_references_and_provenance(ratpup_report, ortho):
    d = ratpup_report.to_dict()
    methods = next(s for s in d["sections"] if s["id"] == "methods")
    para = methods["blocks"][0]["text"]
    refs = " ".join(i["text"] for i in methods["blocks"][1]["items"])
    for ref in (
        "Bates, D.",
        "(2015)",
        "Kuznetsova",
        "(2017). lmerTest",
        "Satterthwaite, F. E.",
        "Kenward, M. G. & Roger, J. H. (1997)",
        "Nakagawa, S.",
        "West, B. T.",
        "Self, S. G.",
    ):
        assert ref in refs, ref
    assert "restricted maximum likelihood" in para and "chi-bar-square" in para
    prov = {r[""]: r["value"] for r in methods["blocks"][2]["rows"]}
    data = ratpup_report.analysis.data
    csv = data.to_csv(index=False, lineterminator="\n").encode()
    assert prov["Data SHA-256"] == hashlib.sha256(csv).hexdigest()
    assert prov["Command"] == "mm.analyze('ratpup')"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", prov["Date"])
    assert "mixedmodels" in prov["Software"] and "numpy" in prov["Software"]
    o = next(s for s in ortho.to_dict()["sections"] if s["id"] == "methods")
    assert "West" not in str(o) and "varIdent" not in str(o)


# ------------------------------------------------------------------ tables and figures
def _tables(sections):
    for s in sections:
        for b in s["blocks"]:
            if b["type"] == "table":
                yield b
        yield from _tables(s["sections"])


def test_every_estimate_table_has_intervals(all_reports):
    for name, r in all_reports.items():
        tables = list(_tables(r.to_dict()["sections"]))
        fixed = [t for t in tables if t["title"] == "Fixed effects"]
        assert len(fixed) == len(r.analysis.models)
        for t in fixed:
            assert "2.5 %" in t["columns"] and "97.5 %" in t["columns"]
        vc = [t for t in tables if t["title"] == "Intervals of the variance parameters"]
        assert len(vc) == sum(m.vc_ci is not None for m in r.analysis.models), name
        for t in tables:
            if t["title"].startswith(("Marginal means", "Pairwise contrasts")):
                assert "2.5 %" in t["columns"], t["title"]


def test_fixed_effect_intervals_are_wald_t(ortho):
    m = ortho.analysis.diagnosed
    from scipy import stats

    c = m.coef
    q = stats.t.ppf(0.975, c["df"])
    assert np.allclose(c["lower"], c["estimate"] - q * c["se"])
    assert np.allclose(c["upper"], c["estimate"] + q * c["se"])


def test_emmeans_only_for_factors(sleep, ortho, ratpup_report):
    assert sleep.analysis.diagnosed.emmeans == []
    assert [v for v, _ in ortho.analysis.diagnosed.emmeans] == ["Sex"]
    assert [v for v, _ in ratpup_report.analysis.diagnosed.emmeans] == ["treatment", "sex"]


def test_trajectories_for_longitudinal_data_only(all_reports):
    expected = {"sleepstudy": ("Days", "Subject"), "Orthodont": ("age", "Subject")}
    for name, r in all_reports.items():
        assert r.analysis.trajectory == expected.get(name), name
        titles = [f.title for f in r.document.figures()]
        assert any(t.startswith(f"{r.analysis.response} over") for t in titles) == (
            name in expected
        )


def test_wide_figures_take_the_row(ratpup_report):
    for f in ratpup_report.document.figures():
        if f.width > 560:
            assert f.wide, f.title


def test_variance_intervals_only_where_cheap_and_the_methods_say_which(monkeypatch):
    from mixedmodels.report import analysis

    monkeypatch.setattr(analysis, "PROFILE_MAX_PARAMS", 2)
    rep = analyze(
        "sleepstudy", ["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)"]
    )
    m1, m2 = rep.analysis.models
    assert m1.vc_ci is not None and m2.vc_ci is None
    assert "run fit.confint(method='profile')" in m2.vc_ci_method
    d = rep.to_dict()
    para = next(s for s in d["sections"] if s["id"] == "methods")["blocks"][0]["text"]
    assert "those for the variance parameters of M1 come from the profile likelihood" in para
    model2 = next(s for s in d["sections"][2]["sections"] if s["id"] == "model-m2")
    assert any(
        b["type"] == "note" and "no intervals for the variance parameters" in b["text"]
        for b in model2["blocks"]
    )
    ci = m1.fit.confint(method="profile", parm="theta_")
    assert np.allclose(m1.vc_ci.to_numpy(), ci.to_numpy())


def test_numeric_column_coded_as_a_factor_reads_as_levels():
    rep = analyze("sleepstudy", ["Reaction ~ C(Days) + (1 | Subject)"])
    text = _text(rep)
    b = rep.analysis.diagnosed.coef["estimate"]
    col = next(c for c in b.index if c.endswith("9"))
    assert f"Days = 9 (vs 0): Reaction higher by {b[col]:.3g}, other predictors held fixed" in text
    assert "each extra unit of Days" not in text and "estimate " not in text
    assert rep.analysis.trajectory == ("Days", "Subject")
    assert [v for v, _ in rep.analysis.diagnosed.emmeans] == ["Days"]
