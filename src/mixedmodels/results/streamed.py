"""After a fit on streamed data: predictions chunk by chunk, and a sample of residuals.

A fit from streamed chunks keeps no rows (:mod:`mixedmodels.models.streamed`). Fitted values
and residuals are written back out chunk by chunk (:func:`write_predictions`); diagnostics
that need all residuals use a uniform random sample (:func:`sample_residuals`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mixedmodels.errors import DataError, ModelSpecificationError
from mixedmodels.io.sources import Progress, chunk_rows_or_default, open_source

if TYPE_CHECKING:  # pragma: no cover
    from .lmm import LinearMixedModelResult

__all__ = ["chunk_predictions", "sample_residuals", "write_predictions"]


# ---------------------------------------------------------------------------------------------
# After the fit: predictions chunk by chunk, and a sample of residuals
# ---------------------------------------------------------------------------------------------
def chunk_predictions(fit: LinearMixedModelResult, data: pd.DataFrame) -> pd.DataFrame:
    """Conditional fitted values and residuals of one chunk (NaN for rows not fitted)."""
    from mixedmodels.design.levels_spec import complete_rows, response_values

    spec = fit.design.spec
    if spec is None:
        raise ModelSpecificationError("this fit has no design spec to predict with")
    keep = complete_rows(spec.formula, data)
    fitted = np.full(len(data), np.nan)
    resid = np.full(len(data), np.nan)
    if keep.any():
        used = data.loc[keep]
        pred = fit.predict(used).to_numpy()
        fitted[keep] = pred
        resid[keep] = response_values(spec, used) - pred
    return pd.DataFrame({"fitted": fitted, "resid": resid}, index=data.index)


def write_predictions(
    fit: LinearMixedModelResult,
    source: Any,
    out_path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    chunk_rows: int | None = None,
    progress: bool = True,
) -> int:
    """Write the source's rows with fitted values and residuals to one Parquet file.

    Rows are read and written chunk by chunk, in the source's order; rows the fit did not
    use (a missing value in a used column) get NaN. The file appears all at once (written
    under a temporary name, then renamed) or not at all.

    Parameters
    ----------
    fit
        A fit of this source (streamed or in memory).
    source
        The data the model was fitted to (any streamed source; not Dask).
    out_path
        The Parquet file to write.
    columns
        Source columns to copy next to ``fitted`` and ``resid`` (default: all).
    chunk_rows, progress
        As for :func:`lmer_streamed`.

    Returns
    -------
    int
        Number of rows written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = open_source(source)
    rows_per_chunk = chunk_rows_or_default(chunk_rows)
    out = Path(os.fspath(out_path))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    needed = None if columns is None else list(dict.fromkeys([*columns, *_formula_columns(fit)]))
    writer = None
    written = 0
    try:
        with Progress("writing predictions", src.total_rows(), progress) as bar:
            for _, frame in src.chunks(needed, rows_per_chunk):
                pred = chunk_predictions(fit, frame)
                kept = frame if columns is None else frame[list(columns)]
                table = pa.Table.from_pandas(pd.concat([kept, pred], axis=1), preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                elif table.schema != writer.schema:
                    table = table.cast(writer.schema)
                writer.write_table(table)
                written += len(frame)
                bar.advance(len(frame))
        if writer is None:
            raise DataError("the source has no rows to write")
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return written


def _formula_columns(fit: LinearMixedModelResult) -> list[str]:
    return list(fit.design.spec.formula.columns_used())


def sample_residuals(
    fit: LinearMixedModelResult,
    source: Any,
    n: int = 5000,
    *,
    seed: int = 0,
    chunk_rows: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """A uniform random sample (without replacement) of the fitted rows' residuals.

    For diagnostics that need all residuals (Shapiro-Wilk, Q-Q plots), which on millions
    of rows are both slow and over-powered: Shapiro-Wilk is defined for at most 5000
    values. Each row gets a uniform random key from ``numpy.random.default_rng(seed)``, in
    source order, and the ``n`` fitted rows with the smallest keys are kept; so the sample
    depends on the seed and the row order, not on the chunk size.

    Parameters
    ----------
    fit
        A fit of this source.
    source
        The data the model was fitted to.
    n
        Sample size (all fitted rows if fewer).
    seed
        Seed of the random keys.

    Returns
    -------
    pandas.DataFrame
        ``row`` (0-based position in the source), ``fitted``, ``resid``, sorted by row.

    Examples
    --------
    >>> sample = sample_residuals(fit, "events/*.parquet")  # doctest: +SKIP
    >>> mm.diagnostics.shapiro_wilk(sample["resid"])  # doctest: +SKIP
    """
    if n < 1:
        raise DataError(f"the sample size n must be at least 1, not {n}")
    src = open_source(source)
    rng = np.random.default_rng(seed)
    rows_per_chunk = chunk_rows_or_default(chunk_rows)
    from mixedmodels.design.levels_spec import complete_rows

    formula = fit.design.spec.formula
    keys = np.empty(0)
    rows = np.empty(0, dtype=np.int64)
    fitted = np.empty(0)
    resid = np.empty(0)
    offset = 0
    with Progress("sampling residuals", src.total_rows(), progress) as bar:
        for _, frame in src.chunks(_formula_columns(fit), rows_per_chunk):
            chunk_keys = rng.random(len(frame))
            candidates = np.flatnonzero(complete_rows(formula, frame))
            all_keys = np.concatenate([keys, chunk_keys[candidates]])
            if len(all_keys) > n:
                best = np.argpartition(all_keys, n - 1)[:n]
            else:
                best = np.arange(len(all_keys))
            old = best[best < len(keys)]
            new = candidates[best[best >= len(keys)] - len(keys)]
            pred = chunk_predictions(fit, frame.iloc[new])
            keys = np.concatenate([keys[old], chunk_keys[new]])
            rows = np.concatenate([rows[old], offset + new])
            fitted = np.concatenate([fitted[old], pred["fitted"].to_numpy()])
            resid = np.concatenate([resid[old], pred["resid"].to_numpy()])
            offset += len(frame)
            bar.advance(len(frame))
    order = np.argsort(rows)
    return pd.DataFrame({"row": rows[order], "fitted": fitted[order], "resid": resid[order]})
