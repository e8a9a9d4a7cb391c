"""Refuse a dense block that cannot fit in memory, before allocating it.

The blocked engine keeps one dense symmetric matrix of size ``m = q_r + p + 1`` (the rest
terms' random effects with ``[X y]`` appended): a workspace and the factor it hands over,
``2 m^2`` doubles. 10,000 rest levels make that 1.6 GB; 100,000 make it 160 GB, which no
machine has, and numpy would fail only after minutes of reading rows with a bare
``MemoryError`` naming an array shape. The check here fails first, in one line that names
the terms and says what to do.
"""

from __future__ import annotations

import os

from mixedmodels.errors import ModelSpecificationError

#: Dense m x m arrays the blocked engine holds at once (workspace and factor).
DENSE_COPIES = 2


def available_bytes() -> int | None:
    """Memory available to this process now: MemAvailable from /proc/meminfo (Linux), else
    the physical pages' size; None if neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes < 1e11 else f"{nbytes / 1e9:,.0f} GB"


def check_dense_block(m: int, terms: str, available: int | None = None) -> None:
    """Raise before allocating ``DENSE_COPIES`` dense ``m x m`` arrays that would not fit.

    Parameters
    ----------
    m
        Size of the dense block (rest random effects + fixed effects + 1).
    terms
        The random-effects terms in the block, as the user wrote them (for the message).
    available
        Bytes available (default: :func:`available_bytes`; unknown -> no check).
    """
    need = DENSE_COPIES * 8.0 * float(m) * float(m)
    if available is None:
        available = available_bytes()
    if available is None or need <= available:
        return
    raise ModelSpecificationError(
        f"the random-effects terms after the first ({terms}) have {m - 1:,} effects with the "
        f"fixed effects, and their dense block needs {_gb(need)}, more than the "
        f"{_gb(available)} of memory available; put the grouping factor with the most levels "
        "first, merge rare levels, or fit on a machine with more memory"
    )
