"""The analysis report of GLMMs: its sections, the numbers and words it shows, what it
leaves out, and its refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels.errors import ModelSpecificationError
from mixedmodels.report import analyze
from mixedmodels.report.glmm_analysis import response_summaries
from mixedmodels.report.terminal import terminal_summary

CBPP_NULL = "cbind(incidence, size - incidence) ~ C(period)"
CBPP = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)"
GROUSE = "TICKS ~ C(YEAR) + cHEIGHT + (1|LOCATION)"
GROUSE_OLRE = "TICKS ~ C(YEAR) + cHEIGHT + (1|LOCATION) + (1|INDEX)"

SECTION_IDS = [
    "findings",
    "data",
    "data-summaries",
    "data-figures",
    "data-hierarchy",
    "models",
    "model-m1",
    "model-m2",
    "model-comparison",
    "assumptions",
    "assumptions-residuals",
    "assumptions-dispersion",
    "assumptions-ranef",
]
#: What belongs to the linear-model page only.
LMM_ONLY = [
    "Satterthwaite",
    "ICC",
    "Intraclass",
    "Shapiro",
    "Levene",
    "Brown-Forsythe",
    "White's",
    "residual variance",
    "Residual variance",
    "REML",
    "Normality of residuals",
    "Equal variance",
]


@pytest.fixture(scope="module")
def cbpp_report():
    return analyze("cbpp", [CBPP_NULL, CBPP], family="binomial")


@pytest.fixture(scope="module")
def grouse_report():
    return analyze("grouseticks", [GROUSE, GROUSE_OLRE], family="poisson", diagnose=0)


def _section_ids(d):
    out = []
    for s in d["sections"]:
        out.append(s["id"])
        out.extend(_section_ids(s))
    return out


def _tables(d):
    for s in d["sections"]:
        for b in s["blocks"]:
            if b["type"] == "table":
                yield b
        yield from _tables(s)


def _table(d, title):
    return next(t for t in _tables(d) if t["title"] == title)


def test_sections_and_title(cbpp_report):
    d = cbpp_report.to_dict()
    assert _section_ids(d) == SECTION_IDS
    assert d["title"] == "Generalized linear mixed-model analysis of cbpp"
    assert d["facts"]["Family"] == "binomial (logit link)"
    html = cbpp_report.to_html()
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in html
    assert html.count("<img") == 7  # proportions, Q-Q, vs predicted, 2 tests, 2 of herd


def test_nothing_of_the_linear_model_page(cbpp_report, grouse_report):
    images = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")
    for report in (cbpp_report, grouse_report):
        for text in (report.to_html(), report.to_markdown(), report.to_json()):
            text = images.sub("", text)
            for word in LMM_ONLY:
                assert word not in text, word


def test_response_as_proportions(cbpp_report):
    data = mm.load_dataset("cbpp")
    d = cbpp_report.to_dict()
    overall = _table(d, "cbind(incidence, size - incidence), all rows")["rows"][0]
    assert overall["events"] == data["incidence"].sum() == 99
    assert overall["trials"] == data["size"].sum() == 842
    assert overall["proportion"] == pytest.approx(99 / 842)
    lo, hi = mm.plots.wilson_interval(99, 842)
    assert (overall["95% CI lower"], overall["95% CI upper"]) == pytest.approx((lo, hi))
    by = {r[""]: r for r in _table(d, "by period")["rows"]}
    for period, part in data.groupby("period"):
        assert by[str(period)]["proportion"] == pytest.approx(
            part["incidence"].sum() / part["size"].sum()
        )


def test_model_tables_with_odds_ratios(cbpp_report):
    d = cbpp_report.to_dict()
    fit = cbpp_report.fits[1]
    models = next(s for s in d["sections"] if s["id"] == "models")
    m2 = next(s for s in models["sections"] if s["id"] == "model-m2")
    titles = [b.get("title") for b in m2["blocks"]]
    assert titles[1:4] == ["Fixed effects", "Odds ratios", "Random effects"]
    fixed = next(b for b in m2["blocks"] if b.get("title") == "Fixed effects")
    assert fixed["columns"] == ["", "Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    coef = fit.coef_table()
    for row in fixed["rows"]:
        assert row["z value"] == pytest.approx(coef.loc[row[""], "z"])
    ratios = next(b for b in m2["blocks"] if b.get("title") == "Odds ratios")
    expected = fit.odds_ratios()
    for row in ratios["rows"]:
        assert row["odds ratio"] == pytest.approx(expected.loc[row[""], "odds ratio"])
        assert row["lower 95%"] == pytest.approx(expected.loc[row[""], "lower"])
    text = m2["blocks"][0]["text"]
    assert "Laplace approximation" in text and "Binomial family, logit link" in text
    m1 = next(s for s in models["sections"] if s["id"] == "model-m1")
    assert any("mm.glm" in b.get("text", "") for b in m1["blocks"])


def test_likelihood_ratio_test_against_the_glm(cbpp_report):
    table = _table(cbpp_report.to_dict(), "Likelihood-ratio tests of neighbouring models")
    row = table["rows"][0]
    direct = mm.compare(
        mm.glm(CBPP_NULL, "cbpp", family="binomial"), mm.glmer(CBPP, "cbpp", family="binomial")
    )
    r = direct.table.iloc[1]
    assert row["Chisq"] == pytest.approx(r["Chisq"])
    assert row["p"] == pytest.approx(r["Pr(>Chisq)"])
    assert row["reference"] == "0.5*chisq(0) + 0.5*chisq(1)"


def test_simulated_residual_checks(cbpp_report):
    a = cbpp_report.analysis
    same = mm.simulated_residuals(cbpp_report.fits[1], nsim=250, seed=123)
    np.testing.assert_array_equal(a.simulated.scaled, same.scaled)  # the report's seed
    table = _table(cbpp_report.to_dict(), "Simulated-residual checks")
    names = [r[""] for r in table["rows"]]
    assert names == [
        "Kolmogorov-Smirnov test of uniformity",
        "DHARMa dispersion test",
        "DHARMa zero-inflation test",
        "DHARMa outlier test (bootstrap)",
        "Pearson chi2 / df",
    ]
    disp = table["rows"][1]
    assert disp["statistic"] == pytest.approx(same.test_dispersion().statistic)
    assert table["rows"][4]["statistic"] == pytest.approx(
        cbpp_report.fits[1].overdispersion().ratio
    )


def test_findings_in_plain_words(cbpp_report):
    found = cbpp_report.findings
    effects = next(f for f in found if f.startswith("Significant fixed effects in M2"))
    assert "as odds ratios" in effects
    assert "period = 2 (vs 1): odds ratio 0.371 (95% CI 0.203 to 0.676" in effects
    assert any("the middle 95% of herd groups have odds between" in f for f in found)
    assert any(f.startswith("M1 vs M2: likelihood ratio 14") for f in found)
    assert any(f.startswith("M2: Overdispersion: the dispersion test ratio is 1.") for f in found)


def test_overdispersed_poisson_report(grouse_report):
    found = grouse_report.findings
    disp = next(f for f in found if "dispersion test ratio" in f)
    assert disp.startswith("M1: Overdispersion: the dispersion test ratio is 1.")
    assert disp.endswith(
        "consider an observation-level random effect or a negative binomial model."
    )
    effects = next(f for f in found if f.startswith("Significant fixed effects in M1"))
    assert "as rate ratios" in effects and "YEAR = 96 (vs 95): rate ratio" in effects
    assert "cHEIGHT: rate ratio 0.9" in effects and "per unit" in effects
    d = grouse_report.to_dict()
    titles = [t["title"] for t in _tables(d)]
    assert "Rate ratios" in titles and "Odds ratios" not in titles
    counts = _table(d, "TICKS, all rows")["rows"][0]
    ticks = mm.load_dataset("grouseticks")["TICKS"]
    assert counts["total"] == ticks.sum()
    assert counts["variance/mean"] == pytest.approx(ticks.var() / ticks.mean())
    assert counts["zeros"] == int((ticks == 0).sum())


def test_observation_level_effect_report():
    report = analyze("grouseticks", [GROUSE_OLRE], family="poisson")
    found = report.findings
    assert any(f.startswith("M1: No over- or underdispersion") for f in found)
    assert any("observation-level random effect (INDEX)" in f for f in found)
    html = report.to_html()
    assert "Caterpillar plot of LOCATION" in html and "Caterpillar plot of INDEX" not in html
    assert "INDEX redrawn" in html


def test_probit_link_is_not_worded_as_odds():
    report = analyze("cbpp", [CBPP], family="binomial", link="probit")
    text = report.to_markdown()
    assert "Odds ratios" not in text and "odds ratio 0." not in text
    assert "Under the probit link exp(estimate) is not an odds ratio or a rate ratio" in text
    assert any("on the probit scale" in f for f in report.findings)


def test_binary_response_skips_dispersion_tests():
    data = mm.load_dataset("cbpp")
    rows = data.loc[data.index.repeat(data["size"])].copy()
    pairs = zip(data["incidence"], data["size"], strict=True)
    rows["case"] = np.concatenate([np.r_[np.ones(k), np.zeros(n - k)] for k, n in pairs])
    report = analyze(rows, ["case ~ C(period) + (1|herd)"], family="binomial", nsim=100)
    names = [t.name for t in report.analysis.tests]
    # 842 rows: the binomial outlier test (DHARMa's default above 500 rows)
    assert names == [
        "Kolmogorov-Smirnov test of uniformity",
        "DHARMa outlier test (exact binomial)",
    ]
    assert report.analysis.pearson is None
    assert any("cannot be seen row by row" in f for f in report.findings)
    overall = _table(report.to_dict(), "case, all rows")["rows"][0]
    assert overall["events"] == 99 and overall["trials"] == 842


def test_rates_with_an_offset():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "t": rng.uniform(1, 5, 200),
            "g": np.repeat(list("abcdefghij"), 20),
            "x": rng.normal(size=200),
        }
    )
    frame["y"] = rng.poisson(frame["t"] * np.exp(0.3 * frame["x"]))
    fit = mm.glmer("y ~ x + offset(log(t)) + (1|g)", frame, family="poisson")
    overall = response_summaries(frame, fit, [])[0][1].iloc[0]
    assert overall["exposure"] == pytest.approx(frame["t"].sum())
    assert overall["rate"] == pytest.approx(frame["y"].sum() / frame["t"].sum())


def test_terminal_summary_and_json(cbpp_report):
    text = terminal_summary(cbpp_report, path="r.html")
    assert text.startswith("Generalized linear mixed-model analysis of cbpp: 56 rows")
    assert "Models (binomial, logit link; maximum likelihood)" in text
    assert "M1 vs M2" in text and "Findings:" in text and "odds ratio 0.371" in text
    d = json.loads(cbpp_report.to_json())
    findings = next(s for s in d["sections"] if s["id"] == "findings")["blocks"][0]["items"]
    assert any(i["kind"] == "warn" and "Overdispersion" in i["text"] for i in findings)


def test_refusals():
    with pytest.raises(ValueError, match="link= applies to generalized linear mixed models"):
        analyze("cbpp", [CBPP], link="logit")
    with pytest.raises(ModelSpecificationError, match="give at least one model formula"):
        analyze("cbpp", [], family="binomial")
    # A GLM null listed last is not checked by default (the last GLMM is); asked for, it is
    # refused in one line.
    with pytest.raises(ModelSpecificationError, match="has no random effects") as info:
        analyze("cbpp", [CBPP, CBPP_NULL], family="binomial", diagnose=1)
    assert "\n" not in str(info.value)


def test_default_check_is_the_last_model_with_random_effects():
    report = analyze("cbpp", [CBPP, CBPP_NULL], family="binomial", nsim=50, seed=1)
    text = report.to_markdown() if hasattr(report, "to_markdown") else str(report)
    assert "M1" in text and "dispersion" in text.lower()
