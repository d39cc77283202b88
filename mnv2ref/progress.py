"""The one progress bar of the package: a line on stderr, redrawn in place, only on a terminal unless asked.

Used by the weights download (bytes), ``mnv2ref predict`` (images) and ``mnv2ref.distributed``
(chunks)::

    bar = Progress(total, unit="images", enabled=None)   # None: only when the stream is a terminal
    bar.update(32)                                       # redrawn at most every 0.1 s, and at the end
    bar.message("skipped x.jpg: ...")                    # a line of text that does not break the bar
    bar.close()                                          # final state and a newline

It draws ``label  43% [#############-----------------] 120/500 images  31.2 images/s  ETA 12s``.
``scale`` and ``unit`` format the counts (``scale=1e6, unit="MB"`` for bytes); ``total=None``
(a download without a Content-Length) draws the count and the rate only. No dependency (tqdm is
not one of ours), nothing is written when disabled, so piping the output gives clean text.
"""
from __future__ import annotations

import sys
import time

WIDTH = 30


class Progress:
    def __init__(self, total: int | None, *, unit: str = "", label: str = "", enabled: bool | None = None,
                 stream=None, scale: float = 1.0, interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.unit, self.label, self.scale, self.interval = total, unit, label, scale, interval
        self.enabled = bool(enabled) and total != 0
        self.done, self.t0, self.last, self.drawn = 0, time.perf_counter(), 0.0, False

    def _fmt(self, n) -> str:
        return f"{n / self.scale:.1f}" if self.scale != 1 else str(int(n))

    def line(self) -> str:
        """The bar as text (without the carriage return)."""
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        per_s = f"{rate / self.scale:5.1f} {self.unit}/s".strip()
        head = f"{self.label} " if self.label else ""
        if not self.total:
            return f"{head}{self._fmt(self.done)} {self.unit}  {per_s}"
        frac = min(self.done / self.total, 1.0)
        fill = int(WIDTH * frac)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        done = self._fmt(self.done).rjust(len(self._fmt(self.total)))
        return (f"{head}{frac:4.0%} [{'#' * fill}{'-' * (WIDTH - fill)}] {done}/{self._fmt(self.total)} "
                f"{self.unit}  {per_s}  ETA {eta:4.0f}s")

    def update(self, n: int = 1, force: bool = False):
        """Count ``n`` more; redraw if enabled and ``interval`` has passed (always at the total)."""
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < self.interval and (self.total is None or self.done < self.total):
            return
        self.last, self.drawn = now, True
        self.stream.write("\r" + self.line() + " ")
        self.stream.flush()

    def message(self, text: str):
        """Print a line of text on the stream (always), keeping the bar below it."""
        if self.enabled and self.drawn:
            self.stream.write("\r" + " " * (len(self.line()) + 1) + "\r")
        print(text, file=self.stream, flush=True)
        if self.enabled and self.drawn:
            self.update(0, force=True)

    def close(self):
        """Draw the final state and end the line."""
        if self.enabled:
            self.update(0, force=True)
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
