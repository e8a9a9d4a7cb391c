"""Nakagawa-Johnson-Schielzeth R² against R's performance::r2_nakagawa (tests/reference/r2/).

Tolerances (the issue's): R² within 1e-4 absolute, the three variances within 1e-4 relative.
Fits from streamed data compute the same numbers from the cross products; they must agree
with the in-memory numbers to 1e-9 relative (the two fits' optima agree to ~1e-12 in theta).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import mixedmodels as mm
from mixedmodels.cli import main
from mixedmodels.diagnostics.r2 import R2Result, _level_diagonal_block_sum, r2
from mixedmodels.errors import ModelSpecificationError, SingularFitWarning

REF_DIR = Path(__file__).resolve().parents[1] / "reference" / "r2"
REFERENCES = sorted(REF_DIR.glob("*.json"))
DATASET = {
    "Orthodont.csv": "Orthodont",
    "Penicillin.csv": "Penicillin",
    "ratpup.csv": "ratpup",
    "sleepstudy.csv": "sleepstudy",
}


def _reference(path: Path) -> dict:
    return json.loads(path.read_text())


def _fit(ref: dict, **kwargs):
    data = mm.load_dataset(DATASET[Path(ref["data_file"]).name])
    return mm.lmer(ref["formula"], data, reml=ref["REML"], **kwargs)


def test_four_references_are_shipped():
    assert [p.stem for p in REFERENCES] == [
        "r2_orthodont",
        "r2_penicillin",
        "r2_ratpup_b",
        "r2_sleepstudy_corr",
    ]


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.stem)
def test_r2_matches_performance(path):
    ref = _reference(path)
    result = _fit(ref).r2()
    assert isinstance(result, R2Result)
    assert result.marginal == pytest.approx(ref["r2_marginal"], abs=1e-4)
    assert result.conditional == pytest.approx(ref["r2_conditional"], abs=1e-4)
    for part in ("var_fixed", "var_random", "var_residual"):
        expected = ref[part]
        if expected == 0:  # intercept-only model: X beta is constant
            assert getattr(result, part) == pytest.approx(0.0, abs=1e-12)
        else:
            assert getattr(result, part) == pytest.approx(expected, rel=1e-4)


def test_parts_add_up_and_var_fixed_uses_n_minus_1():
    fit = mm.lmer("weight ~ treatment + sex + litsize + (1|litter)", "ratpup")
    res = fit.r2()
    total = res.var_fixed + res.var_random + res.var_residual
    assert res.marginal == pytest.approx(res.var_fixed / total, rel=1e-14)
    assert res.conditional == pytest.approx((res.var_fixed + res.var_random) / total, rel=1e-14)
    eta = fit.fitted_marginal.to_numpy()
    assert res.var_fixed == pytest.approx(np.var(eta, ddof=1), rel=1e-14)
    assert res.var_residual == pytest.approx(fit.sigma**2, rel=1e-14)
    # One random intercept: z_i' Sigma z_i is the intercept variance on every row.
    intercept_var = fit.varcorr.loc[fit.varcorr["group"] == "litter", "variance"].iloc[0]
    assert res.var_random == pytest.approx(intercept_var, rel=1e-12)
    assert res.to_dict()["r2_marginal"] == res.marginal


def test_random_slope_variance_is_mean_of_row_quadratic_forms():
    fit = mm.lmer("Reaction ~ Days + (Days|Subject)", "sleepstudy")
    cov = fit.covariance_matrices()["Subject"][0][1]
    days = mm.load_dataset("sleepstudy")["Days"].to_numpy(dtype=float)
    z = np.column_stack([np.ones_like(days), days])
    expected = np.mean(np.einsum("ij,jk,ik->i", z, cov, z))
    assert fit.r2().var_random == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("dataset", "formula"),
    [
        ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
        ("Penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
        ("Orthodont", "distance ~ age*Sex + (age|Subject)"),
        ("Pastes", "strength ~ 1 + (1|batch) + (1|batch:cask)"),
        ("sleepstudy", "Reaction ~ Days + (1|Subject) + (0 + Days|Subject)"),
        # no fixed intercept: 1'X comes from the random intercept's X'Z
        ("sleepstudy", "Reaction ~ 0 + Days + (1|Subject)"),
    ],
)
def test_streamed_fit_gives_the_in_memory_r2(dataset, formula):
    data = mm.load_dataset(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        whole = mm.lmer(formula, data)
        streamed = mm.lmer(formula, data, chunk_rows=37, progress=False)
    assert not streamed.model.has_rows
    a, b = whole.r2(), streamed.r2()
    for name in ("marginal", "conditional", "var_fixed", "var_random", "var_residual"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-9, abs=1e-12)


def test_streamed_fit_without_any_intercept_says_why():
    data = mm.load_dataset("sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        fit = mm.lmer(
            "Reaction ~ 0 + Days + (0 + Days|Subject)", data, chunk_rows=50, progress=False
        )
    with pytest.raises(ModelSpecificationError, match="needs an intercept"):
        r2(fit)
    out = fit.to_dict()
    assert out["r2_marginal"] is None and out["r2_conditional"] is None


def test_level_diagonal_block_sum_dense_and_sparse():
    rng = np.random.default_rng(1)
    p, levels = 3, 5
    blocks = rng.normal(size=(levels, p, p))
    full = sp.block_diag(list(blocks)).toarray()
    full[0, p] = full[p, 0] = 99.0  # an off-diagonal-block entry must not count
    expected = blocks.sum(axis=0)
    expected = (expected + expected.T) / 2
    sym = (full + full.T) / 2
    np.testing.assert_allclose(_level_diagonal_block_sum(sym, p), expected, rtol=1e-14)
    np.testing.assert_allclose(
        _level_diagonal_block_sum(sp.csr_matrix(sym), p), expected, rtol=1e-14
    )


def test_residual_groups_use_mean_residual_variance_over_rows():
    data = mm.load_dataset("ratpup")
    formula = "weight ~ treatment + sex + litsize + (1|litter)"
    fit = mm.lmer(formula, data, residual_groups="treatment")
    res = fit.r2()
    sd = fit.residual_sd
    counts = data["treatment"].value_counts()
    expected = sum(counts[level] * sd[level] ** 2 for level in sd.index) / counts.sum()
    assert res.var_residual == pytest.approx(expected, rel=1e-12)
    # not sigma^2 (the reference stratum's variance): the strata differ
    assert abs(res.var_residual - fit.sigma**2) > 1e-3
    total = res.var_fixed + res.var_random + res.var_residual
    assert res.marginal == pytest.approx(res.var_fixed / total, rel=1e-14)


def test_cli_json_carries_r2(capsys):
    ref = _reference(REF_DIR / "r2_sleepstudy_corr.json")
    code = main(["fit", "sleepstudy", "--formula", ref["formula"], "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    assert result["r2_marginal"] == pytest.approx(ref["r2_marginal"], abs=1e-4)
    assert result["r2_conditional"] == pytest.approx(ref["r2_conditional"], abs=1e-4)


def test_summary_reports_r2():
    fit = mm.lmer("Reaction ~ Days + (Days|Subject)", "sleepstudy")
    text = str(fit.summary())
    assert "R2 (Nakagawa): marginal 0.2787, conditional 0.7992" in text
