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
from typing import Any

#: Rest blocks (random-effect columns after the first term) at least this wide keep all
#: of BLAS's threads.
SMALL_DENSE_BLOCK = 512

_CONTROLLER: list[Any] = []


class _OneBlasThread:
    """One thread for each BLAS library while inside, then the counts they had.

    threadpoolctl's own per-library controllers, set directly: its ``limit`` builds a
    limiter and selects the libraries again on every entry, which costs about as much as
    setting them (~30 us of a small model's ~2 ms fit after a ``gc.collect()``).
    """

    def __init__(self, libraries: list[Any], threads: list[int]):
        self._libraries = libraries
        self._threads = threads

    def __enter__(self) -> None:
        for lib in self._libraries:
            lib.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        for lib, n in zip(self._libraries, self._threads, strict=True):
            lib.set_num_threads(n)


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
        _CONTROLLER.extend([controller, controller.select(user_api="blas").lib_controllers])
    libraries = _CONTROLLER[1]
    # Already one thread (OPENBLAS_NUM_THREADS=1, or an outer limit): nothing to limit.
    # Asking costs ~1 us; entering and leaving the limit ~10 us or more.
    threads = [lib.num_threads for lib in libraries]
    if all(n <= 1 for n in threads):
        return contextlib.nullcontext()
    return _OneBlasThread(libraries, threads)
