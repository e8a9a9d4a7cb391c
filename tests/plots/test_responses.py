"""Proportions by group with Wilson intervals."""

from __future__ import annotations

import math

import pytest

import mixedmodels as mm
from mixedmodels import plots

pytest.importorskip("matplotlib")


def test_wilson_interval_matches_r():
    # R 4.2.2: prop.test(3, 10, correct = FALSE)$conf.int
    assert plots.wilson_interval(3, 10) == pytest.approx((0.1077912674, 0.6032218525), abs=1e-10)
    assert plots.wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(v) for v in plots.wilson_interval(0, 0))


def test_proportions_by_renders_the_pooled_proportions():
    data = mm.load_dataset("cbpp")
    fig = plots.proportions_by(data, "incidence", "size", "period", title="Cases by period")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    expected = data.groupby("period")["incidence"].sum() / data.groupby("period")["size"].sum()
    assert heights == pytest.approx(expected.to_list())
    assert ax.get_title(loc="left") == "Cases by period"
    assert plots.figure_to_png(fig, dpi=40).startswith(b"\x89PNG")
    with pytest.raises(mm.DataError, match="no column 'nope'"):
        plots.proportions_by(data, "incidence", "size", "nope")
