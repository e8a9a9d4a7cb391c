"""One ``worker.py`` run in a fresh process, for scripts that time trees or libraries
outside run.py (baseline.py, native_inputs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker_row(contestant: str, model_key: str, src: Path) -> dict | None:
    """The worker's row for ``contestant`` on one model with ``src`` first on the path and
    one BLAS thread (the page's protocol), or None if the worker failed."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONPATH"] = str(src)
    env.setdefault("PYTHONWARNINGS", "ignore")
    done = subprocess.run(
        [sys.executable, str(HERE / "worker.py"), contestant, model_key],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=600,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return None
    rows = json.loads(lines[-1])["rows"]
    return rows[0] if rows else None
