"""Run one contestant's process under a fit-time cap and a memory cap, sampling its RSS.

Used for the synthetic 1e6-row designs, where a contestant may take far longer than the
others or grow without bound (statsmodels' crossed design is a 1e6-row single group).
The clock that decides "did not finish in N s" starts when the process prints a line
``FIT_STARTED`` (data simulated or read, warm-up done), so that the cap is about the fit
and not about loading data. A process that passes the memory cap is stopped too: on a
shared machine one runaway contestant must not take the others down with it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FIT_STARTED = "FIT_STARTED"
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_KEEP_STDERR = 20


@dataclass
class Outcome:
    """What happened to a supervised process.

    Attributes
    ----------
    status
        ``"exited"`` (look at ``returncode``), ``"timeout"`` or ``"memory"``.
    reason
        Human-readable reason when stopped, else "".
    returncode
        Exit code (None when stopped).
    stdout
        The lines the process printed.
    peak_rss_mb
        Highest sampled resident set size of the process tree (MB); a lower bound of the
        true peak (samples every ``interval`` seconds).
    fit_s
        Seconds from ``FIT_STARTED`` to the end (None if it never started a fit).
    fit_stderr
        The first lines the process wrote to stderr after ``FIT_STARTED`` (e.g. why it
        crashed); stderr is also passed through.
    """

    status: str
    reason: str
    returncode: int | None
    stdout: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    fit_s: float | None = None
    fit_stderr: list[str] = field(default_factory=list)

    def crash_reason(self) -> str:
        """``worker exited with CODE``, plus its first stderr line after the fit started."""
        first = next((line.strip() for line in self.fit_stderr if line.strip()), "")
        text = f"exited with {self.returncode}"
        return f"{text}: {first[:120]}" if first else text


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def tree_rss_mb(pid: int) -> float:
    """Resident set size (MB) of a process and its descendants, from /proc."""
    total_kb = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/statm").read_text().split()
            total_kb += int(fields[1]) * _PAGE_KB
        except (OSError, ValueError, IndexError):
            continue
        todo += _children(p)
    return total_kb / 1024.0


def run_supervised(
    cmd: list[str],
    env: dict[str, str] | None,
    fit_timeout: float,
    setup_timeout: float,
    memory_cap_mb: float,
    interval: float = 0.25,
) -> Outcome:
    """Run ``cmd``; stop it when its fit runs past ``fit_timeout`` or its RSS passes the cap.

    Parameters
    ----------
    cmd, env
        The command and its environment; stderr is passed through.
    fit_timeout
        Seconds allowed after the process prints ``FIT_STARTED``.
    setup_timeout
        Seconds allowed before it does (data and warm-up).
    memory_cap_mb
        Resident set size of the process tree above which it is stopped.
    """
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    fit_stderr: list[str] = []
    fit_started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(FIT_STARTED):
                fit_started.set()
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def forward_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            if fit_started.is_set() and len(fit_stderr) < _KEEP_STDERR:
                fit_stderr.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    err_reader = threading.Thread(target=forward_stderr, daemon=True)
    err_reader.start()
    started = time.perf_counter()
    fit_start: float | None = None
    out: list[str] = []
    peak = 0.0
    status, reason = "exited", ""
    eof = False
    while True:
        try:
            while True:
                line = lines.get_nowait()
                if line is None:
                    eof = True
                    break
                out.append(line)
                if line.startswith(FIT_STARTED) and fit_start is None:
                    fit_start = time.perf_counter()
        except queue.Empty:
            pass
        if proc.poll() is not None and (eof or not reader.is_alive()):
            break
        peak = max(peak, tree_rss_mb(proc.pid))
        now = time.perf_counter()
        if peak > memory_cap_mb:
            status = "memory"
            reason = f"stopped: memory passed the {memory_cap_mb / 1024:.0f} GB cap"
        elif fit_start is not None and now - fit_start > fit_timeout:
            status = "timeout"
            reason = f"did not finish in {fit_timeout:.0f} s"
        elif fit_start is None and now - started > setup_timeout:
            status = "timeout"
            reason = f"data and warm-up took over {setup_timeout:.0f} s"
        if status != "exited":
            _kill_group(proc)
            break
        time.sleep(interval)
    reader.join(timeout=5)
    err_reader.join(timeout=5)
    while not lines.empty():
        line = lines.get_nowait()
        if line is not None:
            out.append(line)
    end = time.perf_counter()
    return Outcome(
        status=status,
        reason=reason,
        returncode=proc.returncode if status == "exited" else None,
        stdout=out,
        peak_rss_mb=peak,
        fit_s=None if fit_start is None else end - fit_start,
        fit_stderr=fit_stderr,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the process and anything it started (its own session, see ``Popen``)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
