"""Whole-process times: interpreter start, ``import mixedmodels``, and one CLI fit."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

RUNS = 5
CLI_FORMULA = "weight ~ treatment + sex + litsize + (1|litter)"


def _median_wall(cmd: list[str], env: dict[str, str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            return {"status": "failed", "reason": done.stderr.strip()[-300:], "cmd": cmd}
    return {"status": "ok", "median_s": statistics.median(times), "times_s": times, "cmd": cmd}


def cli_command() -> list[str]:
    """The installed console script when there is one, else ``python -m mixedmodels.cli``."""
    script = shutil.which("mixedmodels")
    if script is not None:
        return [script]
    return [sys.executable, "-m", "mixedmodels.cli"]


def measure(env: dict[str, str] | None = None, runs: int = RUNS) -> dict[str, dict]:
    env = dict(os.environ if env is None else env)
    py = sys.executable
    cli = cli_command()
    return {
        "python -c pass": _median_wall([py, "-c", "pass"], env, runs),
        "import mixedmodels": _median_wall([py, "-c", "import mixedmodels"], env, runs),
        "import mixedmodels; mm.lmer": _median_wall(
            [py, "-c", "import mixedmodels as mm; mm.lmer"], env, runs
        ),
        "import statsmodels.formula.api": _median_wall(
            [py, "-c", "import statsmodels.formula.api"], env, runs
        ),
        "CLI: mixedmodels fit ratpup": _median_wall(
            [*cli, "fit", "ratpup", "--formula", CLI_FORMULA], env, runs
        ),
    }
