"""Progress of a long run on stderr, and its summary.

On a terminal: one status line redrawn in place (``\\r``, cleared before any other message is printed and drawn
again after it): documents and pages done of those to do, pages per minute, the time left, the page being
worked on. Otherwise (a file, a pipe, a CI log): one plain line after each page. Rates count the pages of this
run only (pages a resumed run skips are not in them); the time left is the pages left times the mean time per
page so far.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO


def fmt_duration(seconds: float) -> str:
    """3h05m, 4m20s, 12s, 0.8s."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class Tally:
    """Pages of a run by outcome: ok (written, complete), hit_limit (written, stopped at -n or the context
    without an end-of-text token), failed (not written)."""

    ok: int = 0
    hit_limit: int = 0
    failed: int = 0

    @property
    def done(self) -> int:
        return self.ok + self.hit_limit + self.failed


@dataclass
class Progress:
    total_pages: int
    total_docs: int
    prog: str = "tilepass-cli"
    stream: TextIO | None = None
    tty: bool | None = None  # None: whether the stream is a terminal
    enabled: bool = True
    clock: Callable[[], float] = time.monotonic
    tally: Tally = field(default_factory=Tally)
    docs_done: int = 0
    current: str = ""
    _t0: float = 0.0
    _shown: bool = False

    def __post_init__(self) -> None:
        if self.stream is None:
            self.stream = sys.stderr
        if self.tty is None:
            try:
                self.tty = bool(self.stream.isatty())
            except (AttributeError, ValueError, OSError):
                self.tty = False
        self._t0 = self.clock()

    # ---- figures ----
    @property
    def elapsed(self) -> float:
        return self.clock() - self._t0

    def pages_per_minute(self) -> float | None:
        n, t = self.tally.done, self.elapsed
        return n / t * 60.0 if n and t > 0 else None

    def eta(self) -> float | None:
        n = self.tally.done
        if not n:
            return None
        return self.elapsed / n * max(0, self.total_pages - n)

    def status(self) -> str:
        ppm, eta = self.pages_per_minute(), self.eta()
        parts = [f"{self.tally.done}/{self.total_pages} pages"]
        if self.total_docs > 1:
            parts.append(f"{self.docs_done}/{self.total_docs} documents")
        if ppm is not None:
            parts.append(f"{ppm:.1f} pages/min")
        if eta is not None and self.tally.done < self.total_pages:
            parts.append(f"ETA {fmt_duration(eta)}")
        if self.tally.failed:
            parts.append(f"{self.tally.failed} failed")
        return ", ".join(parts)

    # ---- events ----
    def start_page(self, label: str) -> None:
        self.current = label
        self.redraw()

    def page_done(self, ok: bool, hit_limit: bool = False, document_done: bool = False) -> None:
        """A page is handled (ok: written; hit_limit: written but incomplete); document_done: it was the last
        page of its document in this run."""
        self.docs_done += document_done
        if not ok:
            self.tally.failed += 1
        elif hit_limit:
            self.tally.hit_limit += 1
        else:
            self.tally.ok += 1
        self.current = ""
        if not self.enabled:
            return
        if self.tty:
            self.redraw()
        else:
            self._write(f"{self.prog}: progress: {self.status()}\n")

    # ---- the terminal line ----
    def _bar(self) -> str:
        width = shutil.get_terminal_size((100, 20)).columns
        frac = self.tally.done / self.total_pages if self.total_pages else 1.0
        n = 20
        filled = min(n, int(frac * n))
        line = f"[{'#' * filled}{'-' * (n - filled)}] {self.status()}"
        if self.current:
            line += f" | {self.current}"
        return line[:max(10, width - 1)]

    def clear(self) -> None:
        if self.enabled and self.tty and self._shown:
            self._write("\r\x1b[K")
            self._shown = False

    def redraw(self) -> None:
        if self.enabled and self.tty:
            self._write("\r\x1b[K" + self._bar())
            self._shown = True

    def finish(self) -> None:
        self.clear()

    def _write(self, s: str) -> None:
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone: progress is not worth stopping the run for
            self.enabled = False

    # ---- the end ----
    def summary(self) -> str:
        t = self.tally
        rate = t.done / self.elapsed * 3600.0 if self.elapsed > 0 and t.done else 0.0
        parts = [f"{t.ok} page{'s' if t.ok != 1 else ''} ok"]
        if t.hit_limit:
            parts.append(f"{t.hit_limit} hit -n (written, incomplete)")
        parts.append(f"{t.failed} failed")
        return (f"{', '.join(parts)}; {t.done} page{'s' if t.done != 1 else ''} in {fmt_duration(self.elapsed)} "
                f"({rate:.0f} pages/hour)")


__all__ = ["Progress", "Tally", "fmt_duration"]
