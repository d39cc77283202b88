"""Agreement, op type by op type, of mnv2ref's two int8 modes with TFLite's two paths (a Markdown table).

    python benchmarks/int8_agreement.py        # needs ai-edge-litert; the README's table

For every int8 fixture (fixtures/int8/*.tflite and the Coral file) and every input of its golden
(image, zeros, min, max, noise), counts the elements of each op type's output tensors that differ:

* ``kernels="reference"`` vs ``BUILTIN_REF`` (``experimental_preserve_all_tensors``);
* ``kernels="xnnpack"`` vs ``AUTO`` (every tensor read from a copy of the file with all computed
  tensors as graph outputs, ``tests/litert_tools.expose_all``);
* TFLite's ``AUTO`` vs its own ``BUILTIN_REF`` (how far apart TFLite's two paths are, end to end).
"""
from __future__ import annotations

import collections
import glob
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import litert_tools  # noqa: E402

import mnv2ref  # noqa: E402


def main() -> int:
    root = os.path.join(HERE, "..", "fixtures")
    files = sorted(glob.glob(os.path.join(root, "int8", "*.tflite"))) + \
        [os.path.join(root, "coral", "mobilenet_v2_1.0_224_inat_bird_quant.tflite")]
    cols = ("reference vs BUILTIN_REF", "xnnpack vs AUTO", "TFLite AUTO vs BUILTIN_REF")
    stats = collections.defaultdict(lambda: {c: [0, 0] for c in cols})
    for path in files:
        stem = os.path.basename(path).replace(".tflite", "")
        golden = os.path.join(root, "int8", f"golden_{stem}.npz")
        if not os.path.exists(golden):
            golden = os.path.join(root, "int8", f"golden_coral_{stem}.npz")
        z = np.load(golden)
        ref_m, xnn_m = mnv2ref.load_tflite(path), mnv2ref.load_tflite(path, kernels="xnnpack")
        exposed = litert_tools.expose_all(path)
        for case in (str(c) for c in z["cases"]):
            x = z[f"input/{case}"]
            tr, tx = ref_m.trace(x), xnn_m.trace(x)
            lite_ref, lite_auto = litert_tools.run(path, x, "ref"), litert_tools.run(exposed, x, "auto")
            for op in ref_m.ops:
                n = op.outputs[0]
                for col, a, b in ((cols[0], tr[n], lite_ref[n]), (cols[1], tx[n], lite_auto[n]),
                                  (cols[2], lite_auto[n], lite_ref[n])):
                    s = stats[op.name][col]
                    s[0] += int(np.sum(a != b))
                    s[1] += a.size
        print(f"{stem}: {len(z['cases'])} inputs", file=sys.stderr)
    print("| op | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, s in stats.items():
        print(f"| {name} | " + " | ".join(f"{d:,} / {n:,}" for d, n in (s[c] for c in cols)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
