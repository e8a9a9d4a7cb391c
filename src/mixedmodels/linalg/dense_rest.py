"""The gradient's traces of a wide dense rest block from ``L22^{-1}`` alone (issue 18).

A crossed design ``(1 | a) + (1 | b)`` with 1e5 levels of ``a`` (term 1, eliminated level
by level) and 1e4 of ``b`` leaves a dense 1e4 x 1e4 Schur complement

    S = Lambda_r' (Zr'Zr - C W C') Lambda_r + I,   C = Zr'Z1,  W = diag(t1^2 / m_l),

with ``m_l = 1 + t1^2 n_l`` (``n_l = [Z1'Z1]_ll``). The gradient needs two traces with
``S^{-1}``: ``tr(S^{-1})`` over the rest term, and for term 1

    sum_l (t1 / m_l)^2 t_r^2 c_l' S^{-1} c_l = tr(S^{-1} t_r^2 C diag(t1^2 / m_l^2) C').

The general route reads ``S^{-1}`` at every position of the rank-update pattern (9% of
the block, at random places), so it forms the whole inverse (LAPACK potri: trtri for
``X = L22^{-1}`` and lauum for ``X'X``, ``n^3/3`` flops each). When every level of term
1 has the same ``n_l`` (a balanced term 1: ``m_l = m``) and the rest is one scalar term
(``Zr'Zr = diag(n_j)``), the second trace is a multiple of ``S`` itself:
``t_r^2 C C' t1^2 / m = t_r^2 Zr'Zr + I - S``, hence

    tr(S^{-1} t_r^2 C diag(t1^2/m^2) C') = (sum_j (1 + t_r^2 n_j) [S^{-1}]_jj - q_r) / m,

and both traces need only the diagonal of ``S^{-1}``: the column sums of squares of
``X = L22^{-1}`` (trtri alone, about one factorisation; the lauum half of potri is
saved). Exact: the same numbers as the full inverse up to rounding.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.lapack import dtrtri as _dtrtri

from mixedmodels.linalg.blocked import BlockedFactor, BlockedSystem

#: Rows per slice when the column sums of squares of ``L22^{-1}`` are accumulated
#: (temporaries of 256 x q_r doubles: 20 MB at 1e4 rest levels).
_ROWS = 256


def balanced_scalar_crossed(system: BlockedSystem) -> float | None:
    """``n`` when the system qualifies for :func:`rest_inverse_diagonal`'s traces: term 1
    scalar with every ``n_l = [Z1'Z1]_ll`` equal to ``n`` (exactly), and the rest one
    scalar term (its ``Zr'Z1`` pattern then determines all of ``S``'s off-diagonal);
    None otherwise."""
    terms = system.structure.terms
    if len(terms) != 2 or terms[0].ncols != 1 or terms[1].ncols != 1:
        return None
    z1 = np.asarray(system.A.z1tz1).reshape(-1)
    if z1.shape[0] == 0:
        return None
    n = float(z1[0])
    if not (n > 0.0 and bool(np.all(z1 == n))):
        return None
    return n


def rest_inverse_diagonal(system: BlockedSystem, f: BlockedFactor, owned: bool) -> np.ndarray:
    """``diag(S^{-1})``, ``S = L22 L22'``: the column sums of squares of ``L22^{-1}``.

    LAPACK trtri inverts ``L`` (the whole factor, whose leading block's inverse is
    ``L22^{-1}`` since ``L`` is block lower triangular) in its own storage when the caller
    owns ``f`` (which is then destroyed and released from ``system``), else in a copy of
    ``L22``. ``n^3/3`` flops, where the full inverse (potri) takes twice that.
    """
    if f.L22 is None:
        raise ValueError("no rest block: the model has one random-effects term")
    qr = f.L22.shape[0]
    if owned and f.L is not None:
        system.release(f)
        work = f.L  # C-ordered, lower triangle = L, strict upper = 0 (factor() zeroed it)
    else:
        work = np.empty(f.L22.shape)
        np.copyto(work, f.L22)
    # work.T is Fortran-ordered with L' in its upper triangle: trtri overwrites it with
    # (L')^{-1} = (L^{-1})', i.e. the lower triangle of ``work`` becomes L^{-1}.
    inv, info = _dtrtri(work.T, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError("the rest block of the factor is singular")
    if not np.shares_memory(inv, work):  # LAPACK was handed a copy: read its result
        work = inv.T
    X = work[:qr, :qr]
    out = np.zeros(qr)
    for r0 in range(0, qr, _ROWS):
        r1 = min(r0 + _ROWS, qr)
        # Rows r0:r1 of the lower-triangular X have entries in columns < r1 only (the
        # strict upper triangle is zero).
        block = X[r0:r1, :r1]
        out[:r1] += np.einsum("ij,ij->j", block, block)
    return out


def balanced_traces(
    diag: np.ndarray, n_rest: np.ndarray, t1: float, tr: float, n1: float
) -> tuple[float, float]:
    """The term-1 trace ``sum_l G_l' G_l`` and the rest trace ``tr(S^{-1})`` of the
    gradient from ``diag = diag(S^{-1})`` (see the module docstring):

        term 1: (sum_j (1 + t_r^2 n_j) d_j - q_r) / (1 + t1^2 n1),   rest: sum_j d_j.
    """
    m = 1.0 + t1 * t1 * n1
    weighted = float(np.dot(1.0 + (tr * tr) * n_rest, diag))
    return (weighted - diag.shape[0]) / m, float(diag.sum())
