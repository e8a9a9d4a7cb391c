"""A worker process killed in the middle of a pass: the fit completes with the same numbers.

Dask's scheduler reassigns the lost worker's tasks (the partitions are recomputed from the
graph) and the nanny restarts the process; the blocks summed over partitions are the same
whichever worker formed them, so the fit must equal the in-memory one. A stalled cluster
would fail the test by its timeout instead of hanging CI.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
import dask
import dask.dataframe as dd
import distributed

import mixedmodels as mm
from mixedmodels.errors import DataError
from mixedmodels.models.dask_fit import lmer_dask

NPARTS = 16
ROWS = 2000


def make_partition(i: int) -> pd.DataFrame:
    """One partition, as a slow reader would give it (deterministic from its index)."""
    time.sleep(0.25)
    rng = np.random.default_rng(1000 + i)
    g = rng.integers(0, 200, ROWS)
    x = rng.normal(size=ROWS)
    effects = np.random.default_rng(7).normal(scale=0.8, size=200)
    y = 1.0 + 0.5 * x + effects[g] + rng.normal(size=ROWS)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{v:03d}" for v in g]})


@pytest.mark.slow
def test_worker_killed_mid_pass_gives_the_same_fit():
    formula = "y ~ x + (1 | g)"
    whole = mm.lmer(formula, pd.concat([make_partition(i) for i in range(NPARTS)]))
    with dask.config.set({"distributed.comm.timeouts.connect": "120s"}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", timeout=120
        )
    client = distributed.Client(cluster, timeout=120)
    try:
        pids = client.run(os.getpid)  # worker address -> process id
        victim = sorted(pids.values())[0]
        killed = threading.Event()

        def kill_when_busy() -> None:
            # Wait until the pass is under way (tasks running on the workers), then kill.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if sum(len(v) for v in client.processing().values()) > 0:
                    time.sleep(0.5)
                    os.kill(victim, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.05)

        ddf = dd.from_map(make_partition, list(range(NPARTS)))
        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # A hang fails here (after 240 s) rather than holding CI until its limit.
            fit = pool.submit(lmer_dask, formula, ddf, progress=False).result(timeout=240)
        killer.join(timeout=5)
        assert killed.is_set(), "the worker was not killed during the fit"
        assert fit.nobs == whole.nobs == NPARTS * ROWS
        assert fit.objective == pytest.approx(whole.objective, rel=1e-10)
        np.testing.assert_allclose(fit.fixef.to_numpy(), whole.fixef.to_numpy(), rtol=1e-8)
        assert fit.sigma == pytest.approx(whole.sigma, rel=1e-8)
    finally:
        client.close()
        cluster.close()


def make_killing_partition(i: int) -> pd.DataFrame:
    """Partition 2 kills the worker process that reads it (as a nanny at its memory limit
    would); read in the test's own process (Dask's metadata), it is harmless."""
    try:
        distributed.get_worker()
    except ValueError:
        pass
    else:
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    rng = np.random.default_rng(i)
    g = rng.integers(0, 20, 50)
    return pd.DataFrame({"y": rng.normal(size=50), "g": [f"g{v}" for v in g]})


def test_worker_killed_again_and_again_is_one_clear_error():
    # allowed-failures 0: the first death of a worker running the task gives up on it
    # (the default, 3, would restart the worker 4 times; the message is the same).
    config = {
        "distributed.comm.timeouts.connect": "120s",
        "distributed.scheduler.allowed-failures": 0,
    }
    with dask.config.set(config):
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", timeout=120
        )
    client = distributed.Client(cluster, timeout=120)
    try:
        ddf = dd.from_map(make_killing_partition, list(range(4)))
        with pytest.raises(DataError) as caught:
            lmer_dask("y ~ 1 + (1 | g)", ddf, progress=False)
        message = str(caught.value)
        assert message.startswith("pass 1/2: levels: a Dask worker was killed again and again")
        assert "ran out of memory" in message
        assert "more memory" in message and "more partitions" in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    finally:
        client.close()
        cluster.close()
