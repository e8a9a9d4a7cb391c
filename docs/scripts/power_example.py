"""Make docs/power.png and the tables of docs/power.md (the rat-pup power analysis).

    PYTHONPATH=src python docs/scripts/power_example.py [--nsim 1000] [--jobs 1]

The pilot is West, Welch & Galecki's model 3.1 (ratpup, REML). The planned study assumes
a High-dose effect half the pilot's estimate (-0.35 g instead of -0.86 g) and asks how
many litters give 80% power for the Wald t test of treatmentHigh (Kenward-Roger df).
Seeds are fixed, so the numbers in docs/power.md are reproduced exactly.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import mixedmodels as mm

ROOT = Path(__file__).resolve().parents[2]
FORMULA = "weight ~ treatment + sex + litsize + (1 | litter)"
EFFECT = {"treatmentHigh": -0.35}
SIZES = [10, 15, 20, 25, 30, 35, 40]


def markdown(frame) -> str:
    """A pandas DataFrame as a Markdown table (no tabulate dependency)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsim", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    fit = mm.lmer(FORMULA, "ratpup")
    print(markdown(fit.coef_table(ddf="kenward-roger").round(4).reset_index()))
    t0 = time.perf_counter()
    at_pilot = mm.power(
        fit, "treatmentHigh", fixef=EFFECT, nsim=args.nsim, seed=1, n_jobs=args.jobs
    )
    print(f"\n{at_pilot}\n({time.perf_counter() - t0:.1f} s)\n")
    t0 = time.perf_counter()
    null = mm.power(
        fit, "treatmentHigh", fixef={"treatmentHigh": 0.0}, nsim=args.nsim, seed=2, n_jobs=args.jobs
    )
    print(f"{null}\n({time.perf_counter() - t0:.1f} s)\n")
    t0 = time.perf_counter()
    curve = mm.power_curve(
        fit,
        "treatmentHigh",
        along="litter",
        sizes=SIZES,
        fixef=EFFECT,
        nsim=args.nsim,
        seed=3,
        n_jobs=args.jobs,
    )
    elapsed = time.perf_counter() - t0
    print(curve)
    table = curve.table.assign(
        power=lambda t: (100 * t["power"]).round(1),
        lower=lambda t: (100 * t["lower"]).round(1),
        upper=lambda t: (100 * t["upper"]).round(1),
    )
    print(markdown(table))
    print(f"\npower curve: {elapsed:.1f} s for {len(SIZES)} x {args.nsim} simulations")
    fig = curve.plot(target=0.8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "power.png", dpi=110)


if __name__ == "__main__":
    main()
