"""The design of a GLMM from chunk summaries equals ``build_design``'s on all rows.

Binomial responses (``cbind`` counts, a two-level column whose second level appears only
in a later chunk, 0/1 numbers), glmer's observation-level grouping factors and offsets:
the merged pass-1 summary must give the spec that ``build_design(...,
binomial_response=True, observation_level_terms=True)`` builds, and the chunks' arrays
must be that design's rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mixedmodels.design import build_design
from mixedmodels.design.levels_spec import (
    ChunkSummary,
    design_from_summary,
    summarize_chunk,
)
from mixedmodels.errors import DataError, ModelSpecificationError
from mixedmodels.formula import parse_formula

DATA = Path(__file__).resolve().parents[1] / "data"


def _streamed(formula: str, chunks: list[pd.DataFrame], **flags):
    parsed = parse_formula(formula)
    binomial = flags.get("binomial_response", False)
    summary = ChunkSummary()
    for i, chunk in enumerate(chunks):
        summary = summary.merge(
            summarize_chunk(parsed, chunk, f"chunk {i}", binomial_response=binomial)
        )
    design = design_from_summary(parsed, summary, **flags)
    parts = [design.chunk_glmm_arrays(design.complete(c)) for c in chunks]
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    trials = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
    refs = [np.concatenate([p[3][k][0] for p in parts]) for k in range(len(parts[0][3]))]
    offsets = [design.chunk_weights_offset(design.complete(c))[1] for c in chunks]
    offset = None if offsets[0] is None else np.concatenate(offsets)
    return design, X, y, trials, refs, offset


def _compare(formula: str, frame: pd.DataFrame, chunks: list[pd.DataFrame], **flags):
    whole = build_design(formula, frame, **flags)
    design, X, y, trials, refs, offset = _streamed(formula, chunks, **flags)
    assert design.spec.fixed.column_names == whole.spec.fixed.column_names
    assert design.spec.response_levels == whole.spec.response_levels
    np.testing.assert_allclose(X, whole.X, rtol=1e-15)
    np.testing.assert_array_equal(y, whole.y)
    if whole.trials is None:
        assert trials is None
    else:
        np.testing.assert_array_equal(trials, whole.trials)
    for got, term in zip(refs, whole.re_terms, strict=True):
        np.testing.assert_array_equal(got, term.refs)
    if whole.offset is None:
        assert offset is None
    else:
        np.testing.assert_allclose(offset, whole.offset, rtol=1e-15)
    return design


def test_cbind_counts_stream_as_in_memory():
    frame = pd.read_csv(DATA / "cbpp.csv")
    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
    chunks = [frame.iloc[:20], frame.iloc[20:21], frame.iloc[21:]]
    _compare(formula, frame, chunks, binomial_response=True, observation_level_terms=True)


def test_two_level_response_with_the_success_level_only_in_a_later_chunk():
    frame = pd.read_csv(DATA / "Contraception.csv")
    frame["use"] = np.where(frame["use"] == 1, "Y", "N")
    frame = frame.sort_values("use", kind="stable").reset_index(drop=True)  # N first
    formula = "use ~ age + urban + (1 | district)"
    chunks = [frame.iloc[:600], frame.iloc[600:1500], frame.iloc[1500:]]
    assert set(chunks[0]["use"]) == {"N"}
    design = _compare(formula, frame, chunks, binomial_response=True)
    assert design.spec.response_levels == ("N", "Y")


def test_observation_level_term_and_offset_stream_as_in_memory():
    frame = pd.read_csv(DATA / "grouseticks.csv")
    frame["exposure"] = 1.0 + (np.arange(len(frame)) % 3)
    formula = "TICKS ~ C(YEAR) + cHEIGHT + offset(log(exposure)) + (1|BROOD) + (1|INDEX)"
    chunks = [frame.iloc[i : i + 150] for i in range(0, len(frame), 150)]
    _compare(formula, frame, chunks, observation_level_terms=True)
    with pytest.raises(DataError, match="number of levels"):
        _streamed(formula, chunks)  # an LMM's checks refuse one level per row


def test_binomial_checks_run_on_all_rows():
    frame = pd.read_csv(DATA / "cbpp.csv").assign(none=0)
    parsed = parse_formula("cbind(none, none) ~ 1 + (1 | herd)")
    summary = summarize_chunk(parsed, frame, "chunk 0", binomial_response=True)
    with pytest.raises(DataError, match="has no trials"):
        design_from_summary(parsed, summary, binomial_response=True)
    three = frame.assign(level=np.array(["a", "b", "c", "a"] * 14))
    parsed = parse_formula("level ~ 1 + (1 | herd)")
    summary = summarize_chunk(parsed, three, "chunk 0", binomial_response=True)
    with pytest.raises(DataError, match="has 3 levels"):
        design_from_summary(parsed, summary, binomial_response=True)
    parsed = parse_formula("cbind(incidence, size) ~ 1 + (1 | herd)")
    with pytest.raises(ModelSpecificationError, match="glmer"):
        summarize_chunk(parsed, frame, "chunk 0")  # an LMM refuses binomial counts
    bad = frame.assign(incidence=frame["incidence"] + 0.5)
    with pytest.raises(DataError, match=r"chunk 0: .*whole numbers"):
        summarize_chunk(parsed, bad, "chunk 0", binomial_response=True)
