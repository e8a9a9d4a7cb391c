"""What the benchmark ran on: CPU, cores, memory, load, library versions."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import sys
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2  # kB -> GiB
    return None


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def busy(before: str, after: str) -> str | None:
    """A warning when other work competed for the CPUs during the run, else None."""
    cores = os.cpu_count() or 1
    try:
        peak = max(float(before.split()[0]), float(after.split()[0]))
    except (ValueError, IndexError):
        return None
    if peak <= cores:
        return None
    return (
        f"The machine was busy with other work (1-minute load average up to {peak:.1f} on "
        f"{cores} cores): times are inflated and noisier than on an idle machine; the "
        "ratios are more trustworthy than the absolute seconds."
    )


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def blas() -> str:
    """The BLAS numpy uses, from threadpoolctl when it is installed."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        try:  # numpy >= 1.25 reports what it was built against
            info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        except Exception:
            return "unknown"
        return f"{info.get('name', '?')} {info.get('version', '')} (numpy build)"

    libs = [
        f"{i.get('internal_api', '?')} {i.get('version', '')} ({i.get('num_threads')} threads)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return "; ".join(libs) or "unknown"


def describe() -> dict:
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "blas": blas(),
        "versions": {
            name: version(name)
            for name in ("mixedmodels", "numpy", "scipy", "pandas", "statsmodels", "nlopt")
        },
    }
