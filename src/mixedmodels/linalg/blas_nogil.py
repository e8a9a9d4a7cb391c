"""``dsyrk`` and ``dtrsm`` through the loaded OpenBLAS's CBLAS interface, with the GIL released.

SciPy's f2py wrappers of BLAS hold the GIL for the whole call, so two Python threads that
each call :func:`scipy.linalg.blas.dsyrk` run one after the other. Measured here (one BLAS
thread, 2 cores, 20 ``dsyrk`` of a 2000 x 256 panel per thread): SciPy's wrapper in two
threads 0.97 s wall for 0.96 s CPU, against 0.48 s for one thread; the same routine of the
same library called through :mod:`ctypes` (which releases the GIL around a foreign call)
0.49 s wall for 0.96 s CPU, the same bits. The large path's rank update and level forms
(:mod:`mixedmodels.linalg.rank_update`, the ``"blas"`` layout) split their chunks over two
threads, each with one BLAS thread: through SciPy's wrappers only one of them ran at a time.

The library is the OpenBLAS that :mod:`threadpoolctl` finds loaded (SciPy's wheels carry one,
with ``scipy_``-prefixed symbols); its 32-bit-integer CBLAS symbols are bound once and checked
on a small product against NumPy before they are used. Anywhere else (another BLAS, a 64-bit
integer build, no ``ctypes``) the SciPy wrappers are used, with the GIL held as before.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from scipy.linalg.blas import dsyrk as _scipy_dsyrk
from scipy.linalg.blas import dtrsm as _scipy_dtrsm

# CBLAS enumerations (cblas.h)
_COL_MAJOR = 102
_NO_TRANS, _TRANS = 111, 112
_UPPER, _LOWER = 121, 122
_NON_UNIT = 131
_LEFT = 141

#: The bound routines (dsyrk, dtrsm), None where they could not be, unset before first use.
_BOUND: list[Any] = []


def _bind(path: str) -> tuple[Any, Any] | None:
    """``cblas_dsyrk`` and ``cblas_dtrsm`` of the library at ``path`` (32-bit integers)."""
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for prefix in ("scipy_", ""):
        syrk = getattr(lib, f"{prefix}cblas_dsyrk", None)
        trsm = getattr(lib, f"{prefix}cblas_dtrsm", None)
        if syrk is not None and trsm is not None:
            break
    else:
        return None
    i, d, p = ctypes.c_int, ctypes.c_double, ctypes.c_void_p
    syrk.argtypes = [i, i, i, i, i, d, p, i, d, p, i]
    syrk.restype = None
    trsm.argtypes = [i, i, i, i, i, i, i, d, p, i, p, i]
    trsm.restype = None
    return syrk, trsm


def _works(syrk: Any, trsm: Any) -> bool:
    """Whether the bound routines give NumPy's answers on a small case (a 64-bit-integer
    library behind a 32-bit name, or another calling convention, would not)."""
    a = np.asfortranarray(np.arange(1.0, 7.0).reshape(3, 2))
    c = np.zeros((3, 3), order="F")
    syrk(_COL_MAJOR, _LOWER, _NO_TRANS, 3, 2, 1.0, a.ctypes.data, 3, 0.0, c.ctypes.data, 3)
    u = np.asfortranarray(np.triu(np.arange(1.0, 10.0).reshape(3, 3)) + 3.0 * np.eye(3))
    b = np.asfortranarray(np.arange(1.0, 7.0).reshape(3, 2))
    x = b.copy(order="F")
    trsm(_COL_MAJOR, _LEFT, _UPPER, _TRANS, _NON_UNIT, 3, 2, 1.0, u.ctypes.data, 3,
         x.ctypes.data, 3)  # fmt: skip
    return bool(
        np.allclose(c, np.tril(a @ a.T), rtol=1e-14, atol=0.0)
        and np.allclose(u.T @ x, b, rtol=1e-12, atol=1e-12)
    )


def _routines() -> tuple[Any, Any] | None:
    """The bound routines, found on first use (None: use SciPy's wrappers)."""
    if not _BOUND:
        found = None
        try:
            from threadpoolctl import threadpool_info

            for info in threadpool_info():
                if info.get("internal_api") != "openblas" or not info.get("filepath"):
                    continue
                bound = _bind(info["filepath"])
                if bound is not None and _works(*bound):
                    found = bound
                    break
        except Exception:  # pragma: no cover - no threadpoolctl or ctypes: SciPy's path
            found = None
        _BOUND.append(found)
    return _BOUND[0]


def _takes(*arrays: np.ndarray) -> bool:
    """Whether the CBLAS call can take the arrays as they are: float64, Fortran-ordered,
    the last one (the output) writeable; SciPy's wrappers copy or refuse the others."""
    fits = all(x.dtype == np.float64 and x.flags.f_contiguous for x in arrays)
    return fits and arrays[-1].flags.writeable


def syrk_lower(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``c += a a'`` in the lower triangle of ``c``, in place (``dsyrk``; the upper
    triangle is not touched). ``a``: ``(n, k)`` float64; ``c``: ``(n, n)`` float64,
    Fortran-ordered. Returns ``c``."""
    routines = _routines()
    n, k = a.shape
    if routines is None or c.shape != (n, n) or not _takes(a, c):
        out = _scipy_dsyrk(1.0, a, beta=1.0, c=c, trans=0, lower=1, overwrite_c=1)
        if out is not c:  # pragma: no cover - scipy copied: keep its result
            c[...] = out
        return c
    routines[0](
        _COL_MAJOR, _LOWER, _NO_TRANS, n, k, 1.0, a.ctypes.data, max(1, n), 1.0,
        c.ctypes.data, max(1, n),
    )  # fmt: skip
    return c


def trsm_upper_transposed(u: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``u' x = b`` for upper triangular ``u`` (``m x m``), overwriting ``b``
    (``m x n``, Fortran-ordered) with ``x`` (``dtrsm``). Returns ``x``."""
    routines = _routines()
    m, n = b.shape
    if routines is None or u.shape != (m, m) or not _takes(u, b):
        x = _scipy_dtrsm(1.0, u, b, lower=0, trans_a=1, overwrite_b=1)
        if x is not b and b.flags.writeable:
            b[...] = x
            return b
        return x
    routines[1](
        _COL_MAJOR, _LEFT, _UPPER, _TRANS, _NON_UNIT, m, n, 1.0, u.ctypes.data, max(1, m),
        b.ctypes.data, max(1, m),
    )  # fmt: skip
    return b
