"""The tables of conditional modes both result kinds show (lme4's ``ranef``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def modes_by_group(modes: Any, terms: Any) -> dict[str, pd.DataFrame]:
    """Conditional modes per grouping factor: levels x term columns."""
    return {
        term.group: pd.DataFrame(
            np.array(b),
            index=pd.Index(term.levels, name=term.group),
            columns=list(term.column_names),
        )
        for b, term in zip(modes, terms, strict=True)
    }


def condsd_by_group(condvar: Any, terms: Any) -> dict[str, pd.DataFrame]:
    """Conditional SDs (lme4's ``condVar``) from the per-level covariance blocks."""
    out = {}
    for v, term in zip(condvar, terms, strict=True):
        sd = np.sqrt(np.maximum(np.diagonal(v, axis1=1, axis2=2), 0.0))
        out[term.group] = pd.DataFrame(
            sd, index=pd.Index(term.levels, name=term.group), columns=list(term.column_names)
        )
    return out


def ranef_frame(modes: dict[str, pd.DataFrame], sds: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Tidy modes: ``group, level, term, condval, condsd`` (lme4's ``as.data.frame(ranef)``)."""
    frames = []
    for group, vals in modes.items():
        for term in vals.columns:
            frames.append(
                pd.DataFrame(
                    {
                        "group": group,
                        "level": vals.index.astype(str),
                        "term": term,
                        "condval": vals[term].to_numpy(),
                        "condsd": sds[group][term].to_numpy(),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)
