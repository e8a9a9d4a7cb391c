"""How many BLAS threads the work on one model's blocks should use.

OpenBLAS starts (and, on a busy machine, spins) its threads for every call. On the small
triangular solves and products of a typical model that costs milliseconds per call, 10-50x
the arithmetic: a 6 x 6 solve took 15 ms with two threads at load 7 and microseconds with
one. Large dense blocks (InstEval's 1142 x 1142 rest block, a crossed design's 1e4 x 1e4)
gain from every core. One rule for the fit, refits, influence and the Satterthwaite
derivatives: below :data:`SMALL_DENSE_BLOCK` columns of dense rest block, one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Any

#: Rest blocks (random-effect columns after the first term) at least this wide keep all
#: of BLAS's threads.
SMALL_DENSE_BLOCK = 512

_CONTROLLER: list[Any] = []


def _direct_openblas(lib: Any) -> tuple[Any, Any] | None:
    """OpenBLAS's own ``(get, set)`` thread-count functions from a threadpoolctl controller's
    library (symbols ``openblas_*`` with SciPy's ``scipy_`` prefix or the ``64_`` suffix of
    its 64-bit-integer build); None for other libraries and OpenBLAS on OpenMP (per-thread
    limits, which threadpoolctl sets).

    Called directly they cost ~0.2 us against ~3-5 us through the controller, which for a
    process-wide pool first works out which Python thread controls it: four calls per fit
    were ~3% of a small model's fit. They are used from the main thread only (see
    :class:`_OneBlasThread`).
    """
    if getattr(lib, "internal_api", None) != "openblas":
        return None
    try:
        if lib.threading_layer == "openmp":
            return None
        dynlib = lib.dynlib
    except Exception:  # pragma: no cover - a controller without its library
        return None
    for prefix in ("scipy_", ""):
        for suffix in ("", "64_"):
            get = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                get.argtypes = []
                put.restype = None
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


class _OneBlasThread:
    """One thread for each BLAS library while inside, then the counts they had.

    threadpoolctl's own per-library controllers, set directly: its ``limit`` builds a
    limiter and selects the libraries again on every entry, which costs about as much as
    setting them (~30 us of a small model's ~2 ms fit after a ``gc.collect()``). From the
    main thread, OpenBLAS's own functions (:func:`_direct_openblas`); from other threads the
    controllers, which leave a pool another thread controls alone.
    """

    def __init__(self, setters: list[Any], threads: list[int]):
        self._setters = setters
        self._threads = threads

    def __enter__(self) -> None:
        for put in self._setters:
            put(1)

    def __exit__(self, *exc: object) -> None:
        for put, n in zip(self._setters, self._threads, strict=True):
            put(n)


def blas_threads_for(rest_size: int) -> contextlib.AbstractContextManager[Any]:
    """A context with one BLAS thread when the dense rest block has fewer than
    :data:`SMALL_DENSE_BLOCK` columns, else BLAS's own thread count.

    Parameters
    ----------
    rest_size
        Columns of the model's rest block (random effects of the second and later terms).
    """
    if rest_size >= SMALL_DENSE_BLOCK:
        return contextlib.nullcontext()
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
        libraries = controller.select(user_api="blas").lib_controllers
        direct = [_direct_openblas(lib) for lib in libraries]
        if all(d is not None for d in direct):
            getters = [d[0] for d in direct]  # type: ignore[index]
            setters = [d[1] for d in direct]  # type: ignore[index]
        else:
            getters, setters = [], []
        _CONTROLLER.extend([controller, libraries, getters, setters])
    if _CONTROLLER[2] and threading.current_thread() is threading.main_thread():
        getters, setters = _CONTROLLER[2], _CONTROLLER[3]
        threads = [int(get()) for get in getters]
    else:
        libraries = _CONTROLLER[1]
        setters = [lib.set_num_threads for lib in libraries]
        threads = [lib.num_threads for lib in libraries]
    # Already one thread (OPENBLAS_NUM_THREADS=1, or an outer limit): nothing to limit.
    # Asking costs ~1 us; entering and leaving the limit ~10 us or more.
    if all(n <= 1 for n in threads):
        return contextlib.nullcontext()
    return _OneBlasThread(setters, threads)
