"""The variance-component table both result kinds show (lme4's ``as.data.frame(VarCorr())``)."""

from __future__ import annotations

from typing import Any

import numpy as np

COLUMNS = ["group", "term", "term2", "variance", "sd", "corr"]


def term_covariances(
    structure: Any, theta: np.ndarray, scale2: float = 1.0
) -> dict[str, list[tuple[tuple[str, ...], np.ndarray]]]:
    """Per grouping factor, the covariance matrix of each original term with its column
    names: ``scale2 * T T'`` from the term's template ``T`` at ``theta`` (``scale2`` is
    sigma^2 for a linear mixed model, 1 for a GLMM, which has no residual scale)."""
    out: dict[str, list[tuple[tuple[str, ...], np.ndarray]]] = {}
    for T, term in zip(structure.templates(np.asarray(theta)), structure.terms, strict=True):
        full = scale2 * (T @ T.T)
        for start, stop in term.blocks:
            names = tuple(term.column_names[start:stop])
            out.setdefault(term.group, []).append((names, full[start:stop, start:stop]))
    return out


def variance_component_rows(
    covariances: dict[str, list[tuple[tuple[str, ...], np.ndarray]]],
) -> list[dict[str, Any]]:
    """One row per variance (``variance``, ``sd``) and one per correlation (``corr``, with
    ``term2``), group by group, in the order of the terms."""
    rows: list[dict[str, Any]] = []
    for group, blocks in covariances.items():
        for names, cov in blocks:
            sd = np.sqrt(np.diag(cov))
            for i, name in enumerate(names):
                rows.append(
                    {
                        "group": group,
                        "term": name,
                        "term2": None,
                        "variance": cov[i, i],
                        "sd": sd[i],
                        "corr": np.nan,
                    }
                )
            for j in range(len(names)):
                for i in range(j + 1, len(names)):
                    denom = sd[i] * sd[j]
                    rows.append(
                        {
                            "group": group,
                            "term": names[j],
                            "term2": names[i],
                            "variance": np.nan,
                            "sd": np.nan,
                            "corr": cov[i, j] / denom if denom > 0 else np.nan,
                        }
                    )
    return rows
