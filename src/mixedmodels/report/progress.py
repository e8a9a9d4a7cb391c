"""Progress on stderr while the analysis runs: a rich spinner when available, else lines."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["StepProgress"]


class StepProgress:
    """Show each step of a long job on ``stream`` (stderr by default).

    On a terminal with ``rich`` installed the current step is shown by a spinner with the
    elapsed time; otherwise each step is one line ``mixedmodels: [  2.1s] fitting M2 ...``.
    """

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "mixedmodels"):
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.start = time.perf_counter()
        self._live: Any = None
        self._task: Any = None
        if getattr(self.stream, "isatty", lambda: False)():
            try:
                from rich.console import Console
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
            except ImportError:
                pass
            else:
                self._live = Progress(
                    SpinnerColumn(),
                    TextColumn("[progress.description]{task.description}"),
                    TimeElapsedColumn(),
                    console=Console(file=self.stream),
                    transient=True,
                )
                self._live.start()
                self._task = self._live.add_task("starting", total=None)

    def step(self, text: str) -> None:
        """Show that ``text`` is being done now."""
        if self._live is not None:
            self._live.update(self._task, description=text)
            return
        elapsed = time.perf_counter() - self.start
        print(f"{self.prefix}: [{elapsed:5.1f}s] {text} ...", file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
