"""Results survive pickle (joblib, multiprocessing, saving a fit): the loaded result
reports and predicts exactly what the original does, for every kind of fit."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import mixedmodels as mm
from mixedmodels import datasets


def _sleep() -> pd.DataFrame:
    return datasets.load_dataset("sleepstudy")


def _fits() -> dict[str, tuple[object, pd.DataFrame]]:
    sleep = _sleep()
    rat = datasets.load_dataset("ratpup")
    weighted = rat.assign(w=np.linspace(0.5, 2.0, len(rat)), off=0.1 * rat["litsize"])
    cbpp = datasets.load_dataset("cbpp")
    return {
        "lmer slopes": (lambda: mm.lmer("Reaction ~ Days + (Days | Subject)", sleep), sleep),
        "weights and offset": (
            lambda: mm.lmer(
                "weight ~ treatment + C(sex, Sum) + offset(off) + (1 | litter)",
                weighted,
                weights="w",
            ),
            weighted,
        ),
        "residual groups": (
            lambda: mm.lmer(
                "weight ~ treatment + sex + litsize + (1 | litter)",
                rat,
                residual_groups="treatment",
            ),
            rat,
        ),
        "ar1": (
            lambda: mm.lmer(
                "Reaction ~ Days + (1 | Subject)", sleep, correlation="ar1(Days | Subject)"
            ),
            sleep,
        ),
        "poly and log": (
            lambda: mm.lmer("Reaction ~ poly(Days, 2) + log(Days + 1) + (1 | Subject)", sleep),
            sleep,
        ),
        "glmer": (
            lambda: mm.glmer(
                "cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial"
            ),
            cbpp,
        ),
    }


FITS = _fits()


@pytest.mark.parametrize("name", list(FITS))
def test_pickled_result_reports_and_predicts_the_same(name):
    make, data = FITS[name]
    fit = make()
    loaded = pickle.loads(pickle.dumps(fit))
    assert loaded.loglik == fit.loglik
    pd.testing.assert_series_equal(loaded.fixef, fit.fixef)
    pd.testing.assert_frame_equal(loaded.varcorr, fit.varcorr)
    assert str(loaded.summary()) == str(fit.summary())
    assert loaded.to_dict() == fit.to_dict()
    newdata = data.iloc[:7]
    np.testing.assert_array_equal(loaded.predict(newdata), fit.predict(newdata))
    np.testing.assert_array_equal(loaded.predict(newdata, re=False), fit.predict(newdata, re=False))
