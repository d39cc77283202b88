"""One process vs a 2-worker Dask LocalCluster on a folder of JPEGs (1.0_224), and the cost of a chunk.

    python benchmarks/bench_distributed.py                # 256 JPEGs, 2 rounds
    python benchmarks/bench_distributed.py --images 512 --rounds 3

Each measurement runs in a fresh process, the order rotated round by round (medians reported):

* ``single``: one process, the kernels on all cores: load + ``preprocess_input`` + ``predict`` in
  batches of 32, as ``mnv2ref predict`` does (model built and kernels loaded before the clock starts).
* ``cluster/<chunk>``: ``mnv2ref.distributed.predict`` on an already started
  ``LocalCluster(n_workers=2, threads_per_worker=1)`` (each worker's kernels on 1 core), writing the
  Parquet dataset. Images/s count the chunks (from the first task to the last part file); the
  call's setup (connecting, the model shipped and built on each worker) and the cluster's start-up
  are reported on their own: they are paid once per run, not per image.
* ``overhead``: the same cluster on ``--overhead-chunks`` chunks of one unreadable file each (no forward
  pass): the cost of a chunk besides its images (a task round trip, a Parquet part file written and
  renamed, the result back to the client), as worker time per chunk = wall time x workers / chunks.

Random weights (seed 0; speed does not depend on them); JPEGs of 320x240 made from seeded noise and
shapes, so decoding and resizing are part of the work. Results: ``benchmarks/results/<date>-distributed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SINGLE = """
import json, os, sys, time
import numpy as np, mnv2ref
from mnv2ref.image import collect
files = sorted(collect([sys.argv[1]]))
model = mnv2ref.MobileNetV2(weights=None, alpha=1.0, input_shape=(224, 224, 3))
from mnv2ref import kernels
kernels.warmup(("float32",))
t = time.perf_counter()
n = 0
for i in range(0, len(files), 32):
    x = np.stack([mnv2ref.img_to_array(mnv2ref.load_img(f, target_size=(224, 224))) for f in files[i:i + 32]])
    n += len(model.predict(mnv2ref.preprocess_input(x), batch_size=32))
print(json.dumps({"seconds": time.perf_counter() - t, "images": n, "threads": kernels.get_num_threads()}))
"""

CLUSTER = """
import json, sys, tempfile, time
from distributed import Client
from mnv2ref import distributed, kernels
kernels.warmup(("float32",))
t = time.perf_counter()
cluster = distributed.local_cluster(2)  # what predict(client="local:2") starts
client = Client(cluster)
start = time.perf_counter() - t
with tempfile.TemporaryDirectory() as out:
    t = time.perf_counter()
    s = distributed.predict(sys.argv[1], out + "/ds", client=client, weights=None, alpha=1.0, size=224,
                            chunk_size=int(sys.argv[2]))
    seconds = time.perf_counter() - t
client.close(); cluster.close()
print(json.dumps({"seconds": seconds - s["setup_seconds"], "total": seconds, "setup": s["setup_seconds"],
                  "chunk_seconds": s["chunk_seconds"],
                  "images": s["files"], "chunks": s["chunks"], "startup": start,
                  "threads": sorted(w["numba_threads"] for w in s["workers"].values())}))
"""


def make_jpegs(folder: Path, n: int):
    from PIL import Image, ImageDraw
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.integers(0, 300), rng.integers(0, 220)
            d.ellipse([x, y, x + 40, y + 30], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        img.save(folder / f"{i:05d}.jpg", quality=90)


def run(code: str, *args) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"benchmark process failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=64, help="chunk size of the main cluster run (default 64)")
    ap.add_argument("--overhead-chunks", type=int, default=64, help="chunks of the overhead run (default 64)")
    a = ap.parse_args()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "jpegs").mkdir()
        make_jpegs(folder / "jpegs", a.images)
        (folder / "empty").mkdir()
        for i in range(a.overhead_chunks):
            (folder / "empty" / f"{i:05d}.jpg").write_bytes(b"not a jpeg")
        configs = {"single": (SINGLE, folder / "jpegs"), f"cluster/{a.chunk}": (CLUSTER, folder / "jpegs", a.chunk),
                   "overhead": (CLUSTER, folder / "empty", 1)}
        results = {k: [] for k in configs}
        names = list(configs)
        for r in range(a.rounds):
            for k in names[r % len(names):] + names[:r % len(names)]:  # rotated order
                results[k].append(run(*configs[k]))
                print(f"round {r + 1} {k}: {results[k][-1]}", file=sys.stderr)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in results.items()}
    big = f"cluster/{a.chunk}"
    per_chunk = 2 * med["overhead"] / a.overhead_chunks  # 2 workers busy in parallel
    summary = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)), "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()], "images": a.images, "rounds": a.rounds,
        "images_per_s": {k: round(a.images / med[k], 1) for k in ("single", big)},
        "seconds": {k: round(s, 2) for k, s in med.items()},
        "cluster_startup_s": round(statistics.median(x["startup"] for x in results[big]), 2),
        "cluster_setup_s": round(statistics.median(x["setup"] for x in results[big]), 2),
        "cluster_total_s": round(statistics.median(x["total"] for x in results[big]), 2),
        "overhead_per_chunk_s": round(per_chunk, 4),
        "chunk_of_256_images_s": round(2 * 256 / (a.images / med[big]), 2),  # worker time at this speed
        "cluster_over_single": round(med["single"] / med[big], 2),
        "raw": results,
    }
    out = HERE / "results" / f"{time.strftime('%Y-%m-%d', time.gmtime())}-distributed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=1))
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
