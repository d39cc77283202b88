"""The package's one progress bar (mnv2ref/progress.py): quiet off a terminal, readable on one."""
from __future__ import annotations

import io

from mnv2ref.progress import WIDTH, Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_quiet_unless_a_terminal_or_forced():
    s = io.StringIO()
    with Progress(10, unit="images", stream=s) as bar:
        bar.update(10)
    assert s.getvalue() == ""
    t = Tty()
    with Progress(4, unit="chunks", stream=t, interval=0) as bar:
        for _ in range(4):
            bar.update(1)
    assert "4/4 chunks" in t.getvalue() and "[" + "#" * WIDTH + "]" in t.getvalue() and t.getvalue().endswith("\n")
    assert "2/4 chunks" in t.getvalue() and "[" + "#" * (WIDTH // 2) + "-" * (WIDTH // 2) + "]" in t.getvalue()
    f = io.StringIO()
    with Progress(0, unit="x", stream=f, enabled=True) as bar:  # nothing to do: no bar
        bar.update(0)
    assert f.getvalue() == ""


def test_bytes_and_unknown_total():
    s = io.StringIO()
    with Progress(2_000_000, unit="MB", scale=1e6, label="w.h5", stream=s, enabled=True) as bar:
        bar.update(2_000_000)
    assert "w.h5 100% [" in s.getvalue() and "2.0/2.0 MB" in s.getvalue()
    s = io.StringIO()
    with Progress(None, unit="MB", scale=1e6, label="w.h5", stream=s, enabled=True) as bar:
        bar.update(1_500_000)
    assert "w.h5 1.5 MB" in s.getvalue() and "%" not in s.getvalue()


def test_message_is_printed_even_without_a_bar():
    s = io.StringIO()
    bar = Progress(3, unit="images", stream=s)
    bar.message("skipped x.jpg")
    assert s.getvalue() == "skipped x.jpg\n"
