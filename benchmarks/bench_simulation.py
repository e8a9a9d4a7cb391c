"""Simulation workloads (issue 17): bootstrap refits and a power curve, timed in one run.

    python benchmarks/bench_simulation.py                    # full: 1,000 x everything
    python benchmarks/bench_simulation.py --nsim 50 --repeats 1 --sizes 10 40   # a check

(a) 1,000 parametric-bootstrap refits of sleepstudy ``Reaction ~ Days + (Days | Subject)``
    (``mm.bootstrap``: simulate, update the y row of the cross products, refit from the
    fit's optimum) on one core (BLAS limited to one thread), median of ``--repeats``; with
    where the time goes (drawing, the y update, the optimiser's evaluations).
(b) The rat-pup power curve: ``weight ~ treatment + sex + litsize + (1 | litter)``, the
    High-dose effect set to -0.35, 1,000 simulations per point at 10, 15, ..., 40 litters:
    ``mm.power_curve`` with its default test (Wald t, Kenward-Roger df, as simr) and with
    a z test (mixedlm's test), against ``mixedlm.powerCurve(along="litter")`` (z test) in
    the same process, one after the other. The designs differ below the pilot's 27
    litters (mixedlm keeps the first litters, we alternate the treatment arms), so compare
    the times, and the powers at 30-40 litters only.

Results: a Markdown table on stdout and ``benchmarks/results/simulation.json``
(git-ignored). Record the machine's load next to the numbers (printed at the start and the
end): on the shared 2-core VM the times move by 20-50%.

With ``--write`` the section replaces its part of docs/benchmarks.md (kept by run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from threadpoolctl import threadpool_limits  # noqa: E402

import mixedmodels as mm  # noqa: E402

SLEEP = "Reaction ~ Days + (Days | Subject)"
RATPUP = "weight ~ treatment + sex + litsize + (1 | litter)"
EFFECT = -0.35


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_bootstrap(nsim: int, repeats: int) -> dict:
    fit = mm.lmer(SLEEP, "sleepstudy")
    mm.bootstrap(fit, nsim=10, seed=0, progress=False)  # warm-up
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        boot = mm.bootstrap(fit, nsim=nsim, seed=r + 1, progress=False)
        times.append(time.perf_counter() - t0)
    # Where the time goes: drawing alone, the y update alone, evaluations per refit.
    sims = fit.simulate(nsim, seed=1).to_numpy()
    t0 = time.perf_counter()
    fit.simulate(nsim, seed=1)
    t_draw = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(nsim):
        fit.model.with_response(sims[:, i]).evaluation_deviance(True)
    t_update = time.perf_counter() - t0
    dev = fit.model.evaluation_deviance(True)
    theta = fit.theta
    t0 = time.perf_counter()
    for _ in range(2000):
        dev(theta)
    t_eval = (time.perf_counter() - t0) / 2000
    return {
        "nsim": nsim,
        "seconds": times,
        "median_s": statistics.median(times),
        "failures": boot.failures,
        "draw_s": t_draw,
        "y_update_and_system_s": t_update,
        "one_evaluation_us": 1e6 * t_eval,
    }


def _ours_curve(fit, sizes, nsim, method):
    t0 = time.perf_counter()
    curve = mm.power_curve(
        fit,
        "treatmentHigh",
        along="litter",
        sizes=sizes,
        fixef={"treatmentHigh": EFFECT},
        nsim=nsim,
        seed=1,
        method=method,
        progress=False,
    )
    return time.perf_counter() - t0, list(curve.table["power"])


def bench_power(sizes: list[int], nsim: int, with_mixedlm: bool) -> dict:
    fit = mm.lmer(RATPUP, "ratpup")
    out: dict = {"sizes": sizes, "nsim": nsim}
    for method in ("kenward-roger", "z"):
        seconds, powers = _ours_curve(fit, sizes, nsim, method)
        out[f"ours_{method}"] = {"seconds": seconds, "power": powers}
    if with_mixedlm:
        try:
            import mixedlm
        except ImportError:
            out["mixedlm"] = {"error": "mixedlm is not installed"}
            return out
        data = mm.load_dataset("ratpup").copy()
        # The same effect: shift the High litters so that the pilot's estimate is EFFECT.
        shift = EFFECT - float(fit.fixef["treatmentHigh"])
        data["weight"] = data["weight"] + shift * (data["treatment"] == "High")
        pilot = mixedlm.lmer(RATPUP, data)
        name = next(n for n, v in pilot.fixef().items() if abs(v - EFFECT) < 1e-6)
        t0 = time.perf_counter()
        curve = mixedlm.powerCurve(
            pilot, test=name, along="litter", values=sizes, nsim=nsim, seed=1
        )
        seconds = time.perf_counter() - t0
        powers = [float(x) for x in curve.powers]
        out["mixedlm"] = {"seconds": seconds, "power": powers, "test": name}
    return out


def main() -> None:
    import sections

    sections.run_report("simulation", _report)


def _report() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsim", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 15, 20, 25, 30, 35, 40])
    parser.add_argument("--no-mixedlm", action="store_true")
    parser.add_argument("--skip", choices=["bootstrap", "power"], default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    result = {"load_start": _load()}
    with threadpool_limits(1):
        if args.skip != "bootstrap":
            result["bootstrap"] = bench_bootstrap(args.nsim, args.repeats)
        if args.skip != "power":
            result["power_curve"] = bench_power(args.sizes, args.nsim, not args.no_mixedlm)
    result["load_end"] = _load()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "simulation.json").write_text(json.dumps(result, indent=2))
    import datetime
    import platform

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print("## Simulation workloads (issue 17): bootstrap refits and a power curve\n")
    print(
        f"Generated by `python benchmarks/bench_simulation.py --write` ({stamp}, "
        f"{platform.processor() or platform.machine()}, one process, one BLAS thread); "
        f"mixedmodels {mm.__version__}. (a) `mm.bootstrap` of sleepstudy "
        "`Reaction ~ Days + (Days | Subject)`: simulate, update the y row of the cross "
        "products, refit from the fit's optimum; median of the repeats. (b) The rat-pup "
        "power curve (High-dose effect -0.35) with `mm.power_curve` (Wald t with "
        "Kenward-Roger df, as simr; and a z test, as mixedlm) against "
        "`mixedlm.powerCurve(along='litter')` in the same process. The extended designs "
        "differ below the pilot's 27 litters (mixedlm keeps the first litters and reports "
        "NaN there; we alternate the treatment arms): compare the times, and the powers at "
        "30-40 litters only.\n"
    )
    print(f"Load average at start {result['load_start']}, at end {result['load_end']}.\n")
    if "bootstrap" in result:
        b = result["bootstrap"]
        print(f"| bootstrap refits of sleepstudy (Days|Subject) | {b['nsim']} |")
        print("|---|---|")
        print(f"| median total (s), one core | {b['median_s']:.2f} |")
        print(f"| per refit (ms) | {1e3 * b['median_s'] / b['nsim']:.2f} |")
        print(f"| drawing the responses (s) | {b['draw_s']:.3f} |")
        print(f"| y update + system (s) | {b['y_update_and_system_s']:.3f} |")
        print(f"| one deviance evaluation (us) | {b['one_evaluation_us']:.1f} |")
        print(f"| failed refits | {b['failures']} |\n")
    if "power_curve" in result:
        p = result["power_curve"]
        print(f"| ratpup power curve, {p['nsim']} sims per point, litters {p['sizes']} | s |")
        print("|---|---|")
        for key in ("ours_kenward-roger", "ours_z", "mixedlm"):
            if key in p:
                v = p[key]
                secs = v.get("seconds")
                text = f"{secs:.1f}" if secs is not None else v.get("error")
                print(f"| {key} | {text} |")
        print()
        for key in ("ours_kenward-roger", "ours_z", "mixedlm"):
            if key in p and "power" in p[key]:
                powers = ", ".join("-" if x is None else f"{x:.3f}" for x in p[key]["power"])
                print(f"power {key}: {powers}")


if __name__ == "__main__":
    main()
