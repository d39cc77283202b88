"""docs/int8_block.md shows what examples/int8_block.py computes: every number it prints is on the page."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tflite", reason="the optional extra mnv2ref[tflite] (tflite, flatbuffers) is not installed")

ROOT = Path(__file__).resolve().parent.parent


def test_int8_block_example_reproduces_the_doc():
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "int8_block.py")], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    doc = (ROOT / "docs" / "int8_block.md").read_text()
    assert "equal to TFLite's BUILTIN_REF tensors (fixtures/int8 golden): yes" in p.stdout
    assert p.stdout.count("double rounding = trace: yes") == 4 and p.stdout.count("traced value") == 4
    assert "DIFFERENT" not in p.stdout and "NO" not in p.stdout.split()
    numbers = set(re.findall(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?%?", p.stdout))
    missing = sorted(n for n in numbers if n not in doc)
    assert not missing, f"numbers printed by the example but absent from the doc: {missing}"
    for line in p.stdout.splitlines():  # the printed sections are in the doc verbatim
        assert line in doc, line
