"""The design stage's share of a small model's fit, under the page's protocol, in one process.

    python benchmarks/design_stage.py                       # the small models, 25 fits each
    python benchmarks/design_stage.py --repeats 40 --models dyestuff cake

For each small model: ``build_design`` alone, a whole ``mm.lmer`` fit (with the estimates
and the criterion, as ``contestants.py`` times it) and, when installed, lme-python's fit of
the same data as a polars frame, interleaved, each after ``gc.collect()``. Prints median
CPU seconds of the process (``time.process_time``), which a busy shared machine disturbs
less than wall-clock time: preemption by other processes is not counted, cache misses
after the collection are. Prints only; nothing is written to the docs.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (the benchmark modules sit next to this script)


def _timed(fits: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU seconds per call of each function, interleaved, ``gc.collect()`` first."""
    for fit in fits.values():  # warm-up: imports, caches of parsed formulas
        fit()
    times: dict[str, list[float]] = {name: [] for name in fits}
    for _ in range(repeats):
        for name, fit in fits.items():
            gc.collect()
            start = time.process_time()
            fit()
            times[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="model keys (default: the small models)")
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args(argv)

    import mixedmodels as mm
    from mixedmodels.design import build_design

    try:
        import lme_python
        import polars as pl
    except ImportError:
        lme_python = None
    keys = args.models or [m.key for m in models.MODELS if not m.large and m.synthetic is None]
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; median CPU ms per call")
    print(f"{'model':16s} {'design':>8s} {'fit':>8s} {'share':>6s} {'lme-py':>8s} {'ratio':>6s}")
    for key in keys:
        model = models.BY_KEY[key]
        frame = models.load_frame(model)

        def ours(model: models.Model = model, frame: object = frame) -> object:
            result = mm.lmer(model.formula, frame, reml=True)
            return result.estimates, result.reml_criterion

        fits: dict[str, Callable[[], object]] = {
            "design": lambda model=model, frame=frame: build_design(model.formula, frame),
            "fit": ours,
        }
        if lme_python is not None:
            native = pl.from_pandas(frame)
            fits["lme"] = lambda model=model, native=native: lme_python.lmer(
                model.formula, native, reml=True
            )
            try:
                fits["lme"]()
            except Exception:  # lme-python cannot fit every model (ratpup_d)
                del fits["lme"]
        t = _timed(fits, args.repeats)
        lme = t.get("lme")
        tail = f"{lme * 1e3:8.3f} {t['fit'] / lme:6.2f}" if lme else f"{'':8s} {'':6s}"
        print(
            f"{key:16s} {t['design'] * 1e3:8.3f} {t['fit'] * 1e3:8.3f} "
            f"{t['design'] / t['fit']:6.2f} {tail}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
