"""The analysis report: every section, the numbers it shows, and its three formats."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedmodels as mm
from mixedmodels import describe
from mixedmodels.report import analyze

SECTION_IDS = [
    "findings",
    "data",
    "data-summaries",
    "data-boxplots",
    "data-hierarchy",
    "models",
    "model-m1",
    "model-m2",
    "model-m3",
    "model-m4",
    "model-m5",
    "model-m6",
    "model-m7",
    "model-comparison",
    "assumptions",
    "assumptions-normality",
    "assumptions-variance",
    "assumptions-ranef",
    "assumptions-influence",
    "methods",
]


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


def test_every_section(ratpup_report):
    d = ratpup_report.to_dict()
    assert _section_ids(d) == [i for i in _section_ids(d) if i]  # no empty ids
    assert set(SECTION_IDS) <= set(_section_ids(d))
    html = ratpup_report.to_html()
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in html
        assert f'href="#{sid}"' in html  # the contents list links to it
    titles = [t["title"] for t in _tables(d)]
    for needed in [
        "Variables",
        "weight by treatment × sex",
        "Fixed effects",
        "Tests of fixed-effects terms",
        "Random effects",
        "Intraclass correlation",
        "Correlation of random effects",
        "Fit statistics",
        "Likelihood-ratio tests (tutorial and West et al.'s hypotheses)",
        "Tests of the residual assumptions",
        "Intervals of the variance parameters",
        "Marginal means of treatment (M2)",
        "Pairwise contrasts of treatment (M2)",
        "Provenance",
    ]:
        assert needed in titles, needed


def test_html_is_self_contained(ratpup_report):
    html = ratpup_report.to_html()
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "url(" not in html
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) >= 8 and all(u.startswith("data:image/png;base64,") for u in imgs)
    assert 'name="viewport"' in html


def test_numbers_match_the_library(ratpup_report):
    a = ratpup_report.analysis
    m1 = a.models[0]
    inter = m1.interaction_tests
    assert list(inter.index) == ["treatment:C(sex, Treatment('Male'))"]
    assert inter["p"].iloc[0] == pytest.approx(0.6282, abs=1e-3)  # lmerTest
    m2 = a.models[1]
    assert a.diagnosed is m2
    assert m2.icc.table.loc["litter", "icc"] == pytest.approx(0.3743, abs=1e-4)
    assert m2.coef.loc["treatmentHigh", "df"] == pytest.approx(24.98, abs=0.05)
    # The tutorial's coding: Male the reference sex (intercept 8.323, Female -0.412 in M1).
    assert m1.coef.loc["(Intercept)", "estimate"] == pytest.approx(8.323, abs=1e-3)
    assert m1.coef.loc["sexFemale", "estimate"] == pytest.approx(-0.412, abs=1e-3)
    assert m1.fit.objective == pytest.approx(401.104, abs=1e-3)  # -2 REML
    assert m2.fit.objective == pytest.approx(396.999, abs=1e-3)
    # The tutorial's vc_formula model is (1 | litter:sex): -2 REML 411.404.
    assert a.models[2].formula.endswith("(1 | litter:sex)")
    assert a.models[2].fit.objective == pytest.approx(411.404, abs=1e-3)
    comps = {(c.first, c.second): c for c in a.comparisons}
    assert comps[("M1", "M2")].result.criterion == "ML"
    assert comps[("M2", "M4")].result.table["Reference"].iloc[1].startswith("0.5*chisq(1)")
    assert "not nested" in comps[("M2", "M3")].refused
    # West, Welch & Galecki (2014), Table 3.5: REML LRTs H3.1-H3.4, ML for H3.5.
    book = {"H3.1": 89.4, "H3.2": 41.2, "H3.3": 1.2, "H3.4": 40.0, "H3.5": 0.6}
    for c in a.comparisons:
        if c.hypothesis:
            assert c.result.table["Chisq"].iloc[1] == pytest.approx(book[c.hypothesis], abs=0.06)
    assert [m.title for m in a.models[4:]] == ["Model 3.2A", "Model 3.2B", "Model 3.3"]
    sw = next(t for t in a.tests if t.name == "Shapiro-Wilk")
    assert sw.statistic == stats.shapiro(a.diagnosed.fit.resid.to_numpy()).statistic
    text = " ".join(ratpup_report.findings)
    assert "modelled in M5 (Model 3.2A), M6 (Model 3.2B), M7 (Model 3.3)" in text
    assert "ICC" in text and "No evidence of a treatment × sex interaction" in text


def test_markdown_and_json(ratpup_report, tmp_path):
    md = ratpup_report.to_markdown()
    assert md.startswith("# Mixed-model analysis of ratpup")
    for heading in [
        "## 1. Findings",
        "## 2. Data",
        "## 3. Models",
        "## 4. Assumptions of M2",
        "## 5. Methods and provenance",
    ]:
        assert heading in md
    assert "| Shapiro-Wilk |" in md
    out = ratpup_report.save(tmp_path / "r.json")
    data = json.loads(out.read_text())
    assert data["facts"]["Observations"] == "322"
    (tmp_path / "r.md").write_text("old")
    with pytest.raises(FileExistsError):
        ratpup_report.save(tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == "old"
    ratpup_report.save(tmp_path / "r.md", force=True)
    assert (tmp_path / "r.md").read_text() == md


def test_repr_html_is_a_fragment(ratpup_report):
    frag = ratpup_report._repr_html_()
    assert frag.startswith("<style>") and "<html" not in frag


def test_missing_describe_by_column():
    with pytest.raises(mm.DataError, match="no column named 'nope'"):
        analyze("ratpup", ["weight ~ sex + (1 | litter)"], describe_by=["sex", "nope"])


def test_not_nested_models_still_report(tmp_path):
    data = mm.load_dataset("ratpup")
    rep = analyze(
        data,
        ["weight ~ sex + (1 | litter)", "weight ~ litsize + (1 | litter)"],
        describe_by="sex",
    )
    (comp,) = rep.analysis.comparisons
    assert comp.result is None and "not nested" in comp.refused
    html = rep.to_html()
    assert "not tested" in html and 'id="assumptions"' in html
    assert any("not compared" in f for f in rep.findings)


def test_formulas_required_for_other_data():
    with pytest.raises(mm.ModelSpecificationError, match="formula"):
        analyze(mm.load_dataset("sleepstudy"))


def test_progress_callback():
    seen = []
    analyze("sleepstudy", ["Reaction ~ Days + (Days | Subject)"], progress=seen.append)
    assert any(s.startswith("fitting M1") for s in seen)
    assert any("assumptions" in s for s in seen)


# -------------------------------------------------------------------- describe
def test_summary_by_matches_researchpy_definition():
    data = mm.load_dataset("ratpup")
    table = describe.summary_by(data, "weight", ["treatment", "sex"])
    g = data[(data.treatment == "High") & (data.sex == "Male")]["weight"]
    row = table.loc["High / Male"]
    n = len(g)
    assert row["N"] == n
    assert row["Mean"] == pytest.approx(g.mean())
    assert row["SD"] == pytest.approx(g.std(ddof=1))
    assert row["SE"] == pytest.approx(g.std(ddof=1) / np.sqrt(n))
    half = stats.t.ppf(0.975, n - 1) * g.std(ddof=1) / np.sqrt(n)
    assert row["95% CI lower"] == pytest.approx(g.mean() - half)
    assert row["95% CI upper"] == pytest.approx(g.mean() + half)
    assert list(table.index)[:2] == ["Control / Female", "Control / Male"]


def test_variables_and_hierarchy():
    df = pd.DataFrame({"y": [1.0, 2.0, None, 4.0], "g": ["a", "a", "b", None]})
    v = describe.variables(df)
    assert v.loc["y", "missing"] == 1 and v.loc["g", "type"] == "factor"
    assert v.loc["g", "levels"] == "a, b"
    h = describe.hierarchy(df, "g")
    assert h["ngroups"] == 2 and h["sizes"].to_dict() == {"a": 2, "b": 1}


def test_influence_names_litter_6_pup_and_influential_litters(ratpup_report):
    """Issue 16: the report names the most influential groups and the largest scaled
    residuals (row, group, value) and says what to do; on rat-pup, litter 6's 3.68 g pup."""
    infl = ratpup_report.analysis.influence
    assert infl is not None and infl.group == "litter"
    text = " ".join(ratpup_report.findings)
    data = ratpup_report.analysis.data
    row = infl.top_observations(1).index[0]
    assert str(data.at[row, "litter"]) == "6" and data.at[row, "weight"] == pytest.approx(3.68)
    assert f"row with index {row} (litter 6, weight 3.68): -7.57" in text
    assert "recording errors" in text  # what to do
    top = infl.top_groups(1).index[0]
    assert f"Refit without litter {top}" in text
    assert "4/27 = 0.148" in text
    html = ratpup_report.to_html()
    assert 'id="assumptions-influence"' in html
    titles = [t["title"] for t in _tables(ratpup_report.to_dict())]
    assert "Largest scaled residuals:" in titles
    figures = [f.title for f in ratpup_report.document.figures()]
    assert "Cook's distance by litter" in figures
    assert "Effects of M2" in figures  # issue 16 item 4: predicted response with bands


def test_influence_finding_without_flags():
    from mixedmodels.report.findings import influence_findings

    r = analyze("sleepstudy", ["Reaction ~ Days + (Days | Subject)"])
    found = influence_findings(r.analysis)
    infl = r.analysis.influence
    flagged = int(infl.groups["influential"].sum())
    kinds = [k for _, k in found]
    assert len(found) == 2
    assert kinds[1] == ("warn" if flagged else "good")
    big = (infl.observations["scaled_resid"].abs() > 3).any()
    assert kinds[0] == ("warn" if big else "good")
