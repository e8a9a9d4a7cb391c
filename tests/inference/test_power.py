"""Power by simulation: type-I error at effect 0, reproducibility, designs, parameters, CLI."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.cli import main
from mixedmodels.power_analysis import clopper_pearson, extend_data

matplotlib.use("Agg")

RATPUP = "weight ~ treatment + sex + litsize + (1 | litter)"


@pytest.fixture(scope="module")
def ratpup():
    return mm.lmer(RATPUP, "ratpup")


def test_clopper_pearson_matches_known_values():
    # R: binom.test(7, 20)$conf.int = 0.1539092 0.5921885
    lo, hi = clopper_pearson(7, 20)
    assert lo == pytest.approx(0.1539092, abs=1e-6)
    assert hi == pytest.approx(0.5921885, abs=1e-6)
    assert clopper_pearson(0, 10)[0] == 0.0
    assert clopper_pearson(10, 10)[1] == 1.0


@pytest.mark.parametrize("method", ["kenward-roger", "satterthwaite"])
def test_type_one_error_at_effect_zero_is_alpha(ratpup, method):
    """At treatmentHigh = 0 the share of p < 0.05 must be compatible with 0.05: alpha lies
    in the 99% Clopper-Pearson interval of the empirical rate (400 simulations)."""
    res = mm.power(
        ratpup,
        "treatmentHigh",
        fixef={"treatmentHigh": 0.0},
        nsim=400,
        seed=2024,
        method=method,
        level=0.99,
        progress=False,
    )
    assert res.failures == 0
    assert res.lower <= 0.05 <= res.upper, str(res)
    # p-values are roughly uniform under the null
    assert 0.3 < float(np.nanmean(res.p_values)) < 0.7


def test_power_reproducible_parallel_invariant_and_larger_for_larger_effects(ratpup):
    kw = dict(nsim=12, seed=5, progress=False)
    a = mm.power(ratpup, "treatmentHigh", fixef={"treatmentHigh": -0.4}, **kw)
    b = mm.power(ratpup, "treatmentHigh", fixef={"treatmentHigh": -0.4}, n_jobs=2, **kw)
    np.testing.assert_allclose(a.p_values, b.p_values, rtol=1e-9)
    big = mm.power(ratpup, "treatmentHigh", fixef={"treatmentHigh": -1.5}, **kw)
    assert big.power == 1.0
    assert big.settings["fixef"]["treatmentHigh"] == -1.5
    assert "Kenward-Roger" in a.method
    assert a.to_dict()["nsim"] == 12
    assert "Clopper-Pearson" in str(a)


def test_changed_variance_components_and_sigma(ratpup):
    base_sd = float(ratpup.varcorr.query("group == 'litter'")["sd"].iloc[0])
    r = mm.power(ratpup, "treatmentHigh", sigma=0.8, nsim=2, seed=1, progress=False)
    # sigma changes, the litter SD stays: theta = sd / sigma
    assert r.settings["sigma"] == 0.8
    assert r.settings["theta"][0] == pytest.approx(base_sd / 0.8, rel=1e-8)
    r = mm.power(ratpup, "treatmentHigh", varcorr={"litter": 0.1}, nsim=2, seed=1, progress=False)
    assert r.settings["theta"][0] == pytest.approx(0.1 / ratpup.sigma, rel=1e-8)
    sleep = mm.lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy")
    cov = np.array([[600.0, 10.0], [10.0, 30.0]])
    r = mm.power(sleep, "Days", varcorr={"Subject": cov}, nsim=2, seed=1, progress=False)
    T = np.linalg.cholesky(cov) / sleep.sigma
    np.testing.assert_allclose(r.settings["theta"], [T[0, 0], T[1, 0], T[1, 1]], rtol=1e-10)
    with pytest.raises(mm.ModelSpecificationError, match="varcorr"):
        mm.power(sleep, "Days", varcorr={"Subject": 3.0}, nsim=2)
    with pytest.raises(mm.ModelSpecificationError, match="no coefficient"):
        mm.power(ratpup, "treatmentHigh", fixef={"nope": 1.0}, nsim=2)
    with pytest.raises(mm.ModelSpecificationError, match="neither a coefficient"):
        mm.power(ratpup, "nope", nsim=2)
    with pytest.raises(mm.ModelSpecificationError, match="lrt"):
        mm.power(ratpup, "treatment", method="lrt", nsim=2)


def test_other_tests_terms_hypotheses_lrt_and_callables(ratpup):
    kw = dict(nsim=6, seed=3, progress=False)
    assert mm.power(ratpup, "treatment", **kw).test == "treatment"
    assert mm.power(ratpup, "treatmentHigh = treatmentLow", **kw).nsim == 6
    lrt = mm.power(ratpup, "treatmentHigh", method="lrt", **kw)
    assert lrt.power == 1.0 and "likelihood ratio" in lrt.method
    null = mm.power(ratpup, null="weight ~ sex + litsize + (1 | litter)", **kw)
    assert null.power == 1.0
    same = mm.power(ratpup, "weight ~ sex + litsize + (1 | litter)", **kw)
    np.testing.assert_array_equal(same.p_values, null.p_values)
    assert same.test.startswith("LRT against")
    z = mm.power(ratpup, "treatmentHigh", method="z", **kw)
    assert "z" in z.method
    user = mm.power(ratpup, _p_of_sex, **kw)
    assert user.test == "_p_of_sex" and user.power == 1.0


def _p_of_sex(fit):
    return float(fit.coef_table(ddf="residual").loc["sexMale", "p"])


def test_extend_data_keeps_the_mix_and_labels():
    frame = mm.load_dataset("ratpup")
    small = extend_data(frame, RATPUP, groups={"litter": 9})
    per_litter = small.groupby("litter")["treatment"].first().value_counts()
    assert sorted(per_litter.to_dict().items()) == [("Control", 3), ("High", 3), ("Low", 3)]
    big = extend_data(frame, RATPUP, groups={"litter": 40})
    assert big["litter"].nunique() == 40
    assert big["litter"].dtype == frame["litter"].dtype
    assert len(big) > len(frame)
    within = extend_data(frame, RATPUP, within={"litter": 5})
    assert (within.groupby("litter").size() == 5).all()
    assert within["litter"].nunique() == frame["litter"].nunique()


def test_power_curve_table_plot_and_sizes(ratpup):
    curve = mm.power_curve(
        ratpup,
        "treatmentHigh",
        along="litter",
        sizes=[9, 30],
        nsim=8,
        seed=1,
        fixef={"treatmentHigh": -0.4},
        progress=False,
    )
    t = curve.table
    assert list(t["size"]) == [9, 30]
    assert list(t.columns[:5]) == ["size", "nobs", "power", "lower", "upper"]
    assert curve.results[1].settings["ngroups"] == {"litter": 30}
    assert (t["lower"] <= t["power"]).all() and (t["power"] <= t["upper"]).all()
    fig = curve.plot()
    assert fig.axes[0].get_xlabel() == "levels of litter"
    assert "litter" in str(curve)
    assert len(curve.to_dict()["points"]) == 2


def test_cli_power_json(capsys):
    code = main(
        [
            "power",
            "ratpup",
            "--formula",
            RATPUP,
            "--test",
            "treatmentHigh",
            "--effect",
            "-0.3",
            "--groups",
            "12",
            "--nsim",
            "6",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["ngroups"] == {"litter": 12}
    assert out["settings"]["fixef"]["treatmentHigh"] == -0.3
    assert out["nsim"] == 6
    code = main(["power", "ratpup", "--formula", RATPUP, "--effect", "1", "--nsim", "2"])
    assert code != 0
