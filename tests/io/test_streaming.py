"""Streamed fits (two passes over chunks of Parquet files) equal the in-memory fits.

What "equal" means, and the tolerances:

* the data path is exact: the summed blocks of A equal the in-memory blocks to 1e-12
  relative (rounding of sums in another order), and every result computed at the same
  theta (fixef, vcov, sigma, ranef, objective) equals the in-memory one to 1e-10;
* the fitted optimum agrees to 1e-8 relative (theta, fixef, sigma) and the objective to
  1e-10. BOBYQA alone locates theta only to about 1e-6 (a 1e-6 change in theta changes the
  deviance by ~1e-11, its rounding noise), so the fit finishes with Newton steps on the
  analytic gradient (optimize.newton_polish), which pin theta to the gradient's rounding;
  the in-memory fit of the same rows in another order agrees as closely
  (test_row_order_does_not_move_the_in_memory_fit).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")
import pyarrow as pa
import pyarrow.parquet as pq

import mixedmodels as mm
from mixedmodels.errors import DataError, InputFileError, RankDeficiencyWarning
from mixedmodels.io.sources import FrameChunks, is_streamed_source
from mixedmodels.models.streamed import lmer_streamed, streamed_cross_products
from mixedmodels.results import LinearMixedModelResult
from mixedmodels.results.streamed import sample_residuals, write_predictions

CASES = {
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    "ratpup": ("ratpup", "weight ~ treatment * sex + litsize + (1 | litter)"),
    "penicillin": ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    "pastes": ("pastes", "strength ~ 1 + (1 | batch/cask)"),
    "orthodont": ("orthodont", "distance ~ age * Sex + (age || Subject)"),
    "cake": ("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)"),
}


def write_parquet_files(frame: pd.DataFrame, folder, nfiles: int = 3, row_group: int = 0):
    """Write ``frame`` as ``nfiles`` Parquet files with small row groups; return the glob."""
    folder.mkdir(exist_ok=True)
    rows_per_group = row_group or max(len(frame) // (3 * nfiles), 1)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), nfiles)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=rows_per_group)
    return str(folder / "*.parquet")


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_same_blocks(streamed, whole) -> None:
    for name in ("z1tz1", "zrtzr", "xytz1", "xytzr", "xytxy"):
        a, b = getattr(streamed, name), getattr(whole, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert rel(a, b) < 1e-12, name
    if whole.zrtz1 is not None:
        assert rel(streamed.zrtz1.toarray(), whole.zrtz1.toarray()) < 1e-12
    assert streamed.nobs == whole.nobs


def at_theta(model, fit) -> LinearMixedModelResult:
    """Results of ``model`` at ``fit``'s optimum (no optimisation)."""
    return LinearMixedModelResult(
        model=model, deviance_function=model.deviance_function(), opt=replace(fit.opt), reml=True
    )


def assert_same_fit(streamed, whole) -> None:
    assert streamed.nobs == whole.nobs
    assert list(streamed.fixef.index) == list(whole.fixef.index)
    assert streamed.ngroups == whole.ngroups
    assert streamed.objective == pytest.approx(whole.objective, rel=1e-10)
    scale = np.maximum(np.abs(whole.theta), 1e-3)
    assert np.max(np.abs(streamed.theta - whole.theta) / scale) < 1e-8
    np.testing.assert_allclose(streamed.fixef, whole.fixef, rtol=1e-8)
    assert streamed.sigma == pytest.approx(whole.sigma, rel=1e-8)


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_parquet_equals_in_memory(case, tmp_path):
    name, formula = CASES[case]
    frame = mm.load_dataset(name).sample(frac=1.0, random_state=7).reset_index(drop=True)
    pattern = write_parquet_files(frame, tmp_path / "data")
    whole_model = mm.LinearMixedModel(mm.build_design(formula, frame))
    whole = whole_model.fit()

    result = streamed_cross_products(formula, pattern, chunk_rows=11, progress=False)
    assert result.nchunks >= 6
    assert_same_blocks(result.cross_products, whole_model.cross_products)
    model = mm.LinearMixedModel(
        result.design, formula=formula, cross_products=result.cross_products
    )

    same_theta = at_theta(model, whole)
    assert same_theta.objective == pytest.approx(whole.objective, rel=1e-12)
    np.testing.assert_allclose(same_theta.fixef, whole.fixef, rtol=1e-10)
    np.testing.assert_allclose(same_theta.vcov, whole.vcov, rtol=1e-10)
    assert same_theta.sigma == pytest.approx(whole.sigma, rel=1e-10)
    for group, table in whole.ranef.items():
        pd.testing.assert_frame_equal(same_theta.ranef[group], table, rtol=1e-8, atol=1e-10)

    streamed = lmer_streamed(formula, pattern, chunk_rows=11, progress=False)
    assert_same_fit(streamed, whole)
    assert streamed.to_dict()["nobs"] == whole.nobs


def test_row_order_does_not_move_the_in_memory_fit():
    """The Newton finish makes the optimum reproducible to 1e-8 despite a flat deviance."""
    formula = "strength ~ 1 + (1 | batch/cask)"
    frame = mm.load_dataset("pastes")
    a = mm.lmer(formula, frame)
    b = mm.lmer(formula, frame.sample(frac=1.0, random_state=1))
    assert a.objective == pytest.approx(b.objective, rel=1e-10)
    assert_same_fit(a, b)


def test_level_seen_only_in_the_last_chunk(tmp_path):
    frame = mm.load_dataset("ratpup")
    # The "High" treatment and litters 25-27 appear only in the last file; the reference
    # level of sex is chosen explicitly, and it is first seen late as well.
    late = (frame["treatment"] == "High") | frame["litter"].isin([25, 26, 27])
    ordered = pd.concat([frame[~late], frame[late]], ignore_index=True)
    formula = "weight ~ treatment + C(sex, ref='Male') + litsize + (1 | litter)"
    folder = tmp_path / "late"
    folder.mkdir()
    pq.write_table(pa.Table.from_pandas(frame[~late], preserve_index=False), folder / "a.parquet")
    pq.write_table(pa.Table.from_pandas(frame[late], preserve_index=False), folder / "b.parquet")
    whole = mm.lmer(formula, ordered)
    streamed = lmer_streamed(formula, str(folder), chunk_rows=50, progress=False)
    assert "treatmentHigh" in streamed.fixef.index
    assert streamed.ngroups == whole.ngroups
    assert list(streamed.ranef["litter"].index) == list(whole.ranef["litter"].index)
    assert_same_fit(streamed, whole)


def test_missing_values_scale_and_center_match(tmp_path):
    frame = mm.load_dataset("sleepstudy").copy()
    frame.loc[[3, 50, 120], "Reaction"] = np.nan
    frame.loc[[7, 77], "Days"] = np.nan
    formula = "Reaction ~ scale(Days) + center(log(Days + 1)) + (1 | Subject)"
    pattern = write_parquet_files(frame, tmp_path / "na")
    whole = mm.lmer(formula, frame)
    streamed = lmer_streamed(formula, pattern, chunk_rows=23, progress=False)
    assert streamed.n_dropped_rows == whole.n_dropped_rows == 5
    assert set(streamed.design.spec.transform_state) == set(whole.design.spec.transform_state)
    for key, value in whole.design.spec.transform_state.items():
        np.testing.assert_allclose(streamed.design.spec.transform_state[key], value, rtol=1e-13)
    assert_same_fit(streamed, whole)


def test_rank_deficient_columns_are_dropped_like_in_memory():
    frame = mm.load_dataset("sleepstudy").copy()
    frame["Days2"] = 2.0 * frame["Days"]
    formula = "Reaction ~ Days + Days2 + (1 | Subject)"
    with pytest.warns(RankDeficiencyWarning, match="Days2"):
        whole = mm.lmer(formula, frame)
    with pytest.warns(RankDeficiencyWarning, match="Days2"):
        streamed = lmer_streamed(formula, frame, chunk_rows=40, progress=False)
    assert streamed.design.dropped_columns == whole.design.dropped_columns == ("Days2",)
    assert_same_fit(streamed, whole)


def test_list_of_frames_and_the_large_grouping_factor():
    """1e5 levels: Z1'Z1 stays block diagonal, memory stays small, the fit is the same."""
    rng = np.random.default_rng(3)
    n, groups = 200_000, 100_000
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    u = rng.normal(size=(groups, 2)) * [0.5, 0.2]
    f = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    y = 1.0 + 0.5 * x + (f == "b") * 0.3 + u[g, 0] + u[g, 1] * x + rng.normal(size=n)
    frame = pd.DataFrame({"y": y, "x": x, "f": f, "g": g})
    formula = "y ~ x + f + (1 + x | g)"
    parts = [frame.iloc[i : i + 60_000] for i in range(0, n, 60_000)]
    assert is_streamed_source(parts)
    whole_model = mm.LinearMixedModel(mm.build_design(formula, frame))
    result = streamed_cross_products(formula, parts, progress=False)
    assert result.cross_products.z1tz1.shape == whole_model.cross_products.z1tz1.shape
    assert result.cross_products.z1tz1.shape[0] > 80_000
    assert result.cross_products.zrtzr is None
    assert_same_blocks(result.cross_products, whole_model.cross_products)


def test_write_predictions_chunk_by_chunk(tmp_path):
    frame = mm.load_dataset("sleepstudy").copy()
    frame.loc[[5, 9], "Reaction"] = np.nan
    formula = "Reaction ~ Days + (Days | Subject)"
    pattern = write_parquet_files(frame, tmp_path / "in")
    whole = mm.lmer(formula, frame)
    out = tmp_path / "pred.parquet"
    assert write_predictions(whole, pattern, out, chunk_rows=25, progress=False) == len(frame)
    back = pd.read_parquet(out)
    assert list(back.columns) == [*frame.columns, "fitted", "resid"]
    assert back["fitted"].isna().sum() == 2
    used = back["fitted"].notna().to_numpy()
    np.testing.assert_allclose(back["fitted"][used], whole.fitted.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(back["resid"][used], whole.resid.to_numpy(), rtol=1e-9, atol=1e-9)
    # A streamed fit writes the same values (to the optimiser's precision), and only the
    # columns asked for.
    streamed = lmer_streamed(formula, pattern, progress=False)
    write_predictions(streamed, pattern, out, columns=["Subject"], progress=False)
    back = pd.read_parquet(out)
    assert list(back.columns) == ["Subject", "fitted", "resid"]
    np.testing.assert_allclose(back["fitted"][used], whole.fitted.to_numpy(), rtol=1e-6)


def test_sample_residuals_is_uniform_reproducible_and_chunk_free(tmp_path):
    frame = mm.load_dataset("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    pattern = write_parquet_files(frame, tmp_path / "s")
    whole = mm.lmer(formula, frame)
    a = sample_residuals(whole, pattern, n=50, seed=11, chunk_rows=7, progress=False)
    b = sample_residuals(whole, pattern, n=50, seed=11, chunk_rows=100, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 50 and a["row"].is_unique and a["row"].is_monotonic_increasing
    np.testing.assert_allclose(a["resid"], whole.resid.to_numpy()[a["row"]], rtol=1e-9)
    everything = sample_residuals(whole, pattern, n=5000, progress=False)
    assert len(everything) == len(frame)
    c = sample_residuals(whole, pattern, n=50, seed=12, progress=False)
    assert not np.array_equal(a["row"], c["row"])


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    frame = mm.load_dataset("dyestuff")
    pattern = write_parquet_files(frame, tmp_path / "d")
    lmer_streamed("Yield ~ 1 + (1 | Batch)", pattern, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pass 1/2" in captured.err and "pass 2/2" in captured.err


# --------------------------------------------------------------------------- bad input
def test_file_with_a_column_of_another_type(tmp_path):
    frame = mm.load_dataset("sleepstudy")
    pattern = write_parquet_files(frame, tmp_path / "t")
    odd = frame.iloc[:10].assign(Days=frame["Days"].iloc[:10].astype(str))
    pq.write_table(pa.Table.from_pandas(odd, preserve_index=False), tmp_path / "t" / "z.parquet")
    with pytest.raises(
        DataError, match=r"column 'Days' is int64 in .*part-0.* but (large_)?string in .*z"
    ):
        lmer_streamed("Reaction ~ Days + (1 | Subject)", pattern, progress=False)


def test_chunk_with_a_column_of_another_type():
    frame = mm.load_dataset("sleepstudy")
    odd = frame.iloc[100:].assign(Days=frame["Days"].iloc[100:].astype(str))
    with pytest.raises(DataError, match=r"'Days' holds numbers in chunk 0 .* but text in chunk 1"):
        lmer_streamed("Reaction ~ Days + (1 | Subject)", [frame.iloc[:100], odd], progress=False)


def test_unreadable_file_among_many(tmp_path):
    frame = mm.load_dataset("sleepstudy")
    pattern = write_parquet_files(frame, tmp_path / "u", nfiles=4)
    (tmp_path / "u" / "part-2.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputFileError, match=r"part-2\.parquet' \(file 3 of 4\) is not a readable"):
        lmer_streamed("Reaction ~ Days + (1 | Subject)", pattern, progress=False)


def test_truncated_file_among_many(tmp_path):
    frame = mm.load_dataset("sleepstudy")
    pattern = write_parquet_files(frame, tmp_path / "v", nfiles=3)
    path = tmp_path / "v" / "part-1.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"part-1\.parquet' \(file 2 of 3\)"):
        lmer_streamed("Reaction ~ Days + (1 | Subject)", pattern, progress=False)


def test_file_without_a_used_column(tmp_path):
    frame = mm.load_dataset("sleepstudy")
    pattern = write_parquet_files(frame, tmp_path / "w")
    pq.write_table(
        pa.Table.from_pandas(frame.drop(columns="Days").iloc[:5], preserve_index=False),
        tmp_path / "w" / "zz.parquet",
    )
    with pytest.raises(DataError, match=r"column 'Days' used in the formula is not in .*zz"):
        lmer_streamed("Reaction ~ Days + (1 | Subject)", pattern, progress=False)


def test_no_matching_files_and_wrong_endings(tmp_path):
    with pytest.raises(InputFileError, match="no files match"):
        lmer_streamed("y ~ x + (1 | g)", str(tmp_path / "*.parquet"), progress=False)
    (tmp_path / "a.csv").write_text("y,x,g\n1,2,a\n")
    with pytest.raises(InputFileError, match=r"not a Parquet file.*duckdb_query"):
        lmer_streamed("y ~ x + (1 | g)", [str(tmp_path / "a.csv")], progress=False)


def test_data_checks_run_on_all_rows():
    frame = mm.load_dataset("sleepstudy")
    # Constant within each chunk is fine; constant overall is not.
    parts = [frame.iloc[:90].assign(Reaction=1.0), frame.iloc[90:].assign(Reaction=2.0)]
    streamed_cross_products("Reaction ~ Days + (1 | Subject)", parts, progress=False)
    with pytest.raises(DataError, match="constant"):
        lmer_streamed(
            "Reaction ~ Days + (1 | Subject)",
            frame.assign(Reaction=3.0),
            chunk_rows=50,
            progress=False,
        )
    with pytest.raises(DataError, match="infinite"):
        lmer_streamed(
            "Reaction ~ Days + (1 | Subject)",
            [frame.iloc[:90], frame.iloc[90:].assign(Days=np.inf)],
            progress=False,
        )
    with pytest.raises(DataError, match="chunk_rows"):
        lmer_streamed("Reaction ~ Days + (1 | Subject)", frame, chunk_rows=0, progress=False)


def test_frame_chunks_source():
    frame = mm.load_dataset("dyestuff")
    chunks = list(FrameChunks(frame).chunks(None, 7))
    assert sum(len(c) for _, c in chunks) == len(frame)
    assert chunks[0][0] == "rows 0-6"


def test_cli_streams_a_glob_and_a_chunked_file(tmp_path, capsys):
    import json

    from mixedmodels.cli import main

    frame = mm.load_dataset("sleepstudy")
    pattern = write_parquet_files(frame, tmp_path / "cli")
    formula = "Reaction ~ Days + (Days | Subject)"
    whole = mm.lmer(formula, frame)
    assert main(["fit", pattern, "--formula", formula, "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["nobs"] == 180
    assert out["reml_criterion"] == pytest.approx(whole.objective, rel=1e-10)
    assert "pass 2/2" in captured.err
    single = str(tmp_path / "cli" / "part-0.parquet")
    assert (
        main(
            [
                "fit",
                single,
                "--formula",
                "Reaction ~ Days + (1 | Subject)",
                "--chunk-rows",
                "13",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["nobs"] == 60


def test_a_frame_with_columns_named_like_the_chunk_protocol_is_not_streamed():
    frame = mm.load_dataset("ratpup").assign(check=1, chunks=2, total_rows=3, name="x")
    assert not is_streamed_source(frame)
    fit = mm.lmer("weight ~ treatment + (1 | litter)", frame)
    assert fit.nobs == len(frame)
