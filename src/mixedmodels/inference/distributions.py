"""Upper-tail probabilities from scipy.special (importing scipy.stats costs ~0.5 s).

These are the functions scipy.stats itself evaluates for ``t.sf``, ``f.sf``, ``chi2.sf``
and ``norm.sf``; keeping them here keeps the command-line start-up short.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def t_sf(x, df):
    """P(T > x) for Student's t with ``df`` degrees of freedom."""
    return special.stdtr(df, -np.asarray(x, dtype=float))


def f_sf(x, dfn, dfd):
    """P(F > x) for the F distribution with (dfn, dfd) degrees of freedom."""
    return special.fdtrc(dfn, dfd, np.asarray(x, dtype=float))


def chi2_sf(x, df):
    """P(X > x) for the chi-square distribution with ``df`` degrees of freedom."""
    return special.chdtrc(df, np.asarray(x, dtype=float))


def norm_sf(x):
    """P(Z > x) for the standard normal distribution."""
    return special.ndtr(-np.asarray(x, dtype=float))
