"""Write the inputs of the DHARMa cross-check (``dharma_reference.R`` reads them).

Simulations from two fits, on DHARMa's scale (successes for cbind responses), small
enough to ship: cbpp (binomial, 56 rows x 100 simulations) and grouseticks (Poisson
without the observation-level effect, 403 rows x 40 simulations).

    PYTHONPATH=src python3 tests/diagnostics/reference/make_dharma_inputs.py
"""

from __future__ import annotations

import json
from pathlib import Path

import mixedmodels as mm

CASES = {
    "cbpp": (
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
        "cbpp",
        "binomial",
        100,
    ),
    "grouseticks": ("TICKS ~ C(YEAR) + cHEIGHT + (1 | LOCATION)", "grouseticks", "poisson", 40),
}


def main() -> None:
    out = {}
    for name, (formula, data, family, nsim) in CASES.items():
        fit = mm.glmer(formula, data, family=family)
        res = mm.simulated_residuals(fit, nsim=nsim, seed=2024)
        out[name] = {
            "formula": formula,
            "family": family,
            "nsim": nsim,
            "observed": [int(v) for v in res.observed],
            "simulated": [[int(v) for v in row] for row in res.simulated],
            "expected": [float(v) for v in res.expected_response],
        }
    path = Path(__file__).with_name("dharma_inputs.json")
    path.write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
