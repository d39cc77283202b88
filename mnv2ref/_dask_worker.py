"""The worker side of ``mnv2ref.distributed``: the model plugin and the chunk task.

Imported only by ``mnv2ref.distributed.predict`` (it imports Dask distributed and pyarrow). Its
functions pickle by reference, so mnv2ref must be installed on every worker.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

_COMPILES = [0]  # Numba compilations in this process since the counter was installed (not cache loads)
_COUNTING = []
# One forward pass at a time per process: Numba's default thread pool (workqueue) must not be entered
# by two threads at once, and a worker with several task threads would do that.
_PREDICT_LOCK = threading.Lock()


def count_compiles() -> int:
    """Install (once) a listener on Numba's "numba:compile" event, which fires for a real compilation
    only (a signature loaded from the on-disk cache returns before it); -> the count so far."""
    if not _COUNTING:
        from numba.core import event

        class Counter(event.Listener):
            def on_start(self, ev):
                _COMPILES[0] += 1

            def on_end(self, ev):
                pass

        event.register("numba:compile", Counter())
        _COUNTING.append(True)
    return _COMPILES[0]


def warm(dtype: str) -> int:
    """Compile or load every kernel for ``dtype`` in this process -> Numba compilations it took."""
    from . import kernels

    before = count_compiles()
    kernels.warmup((dtype,))
    return count_compiles() - before


class ModelPlugin(WorkerPlugin):
    """Builds the model once per worker process (also on workers started or restarted later)."""

    def __init__(self, name: str, spec: dict, data: bytes | None, threads: dict | None):
        self.name, self.spec, self.data, self.threads = name, spec, data, threads
        self.model = self.features = self.head = self.folder = None
        self.builds = self.chunks = self.compiles_before = 0

    def setup(self, worker):
        import warnings

        import numba

        from . import distributed, kernels

        self.compiles_before = count_compiles()  # the run reports compilations from here on
        t = (self.threads or {}).get(distributed._host(worker.address))
        if t:
            kernels.set_num_threads(max(1, min(t, numba.config.NUMBA_NUM_THREADS)))
        path = None
        if self.data is not None:  # this worker's own copy of the client's file
            self.folder = os.path.join(worker.local_directory, self.name)
            os.makedirs(self.folder, exist_ok=True)
            path = os.path.join(self.folder, self.spec["name"])
            with open(path + ".tmp", "wb") as f:
                f.write(self.data)
            os.replace(path + ".tmp", path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the client showed them
            self.model, self.features = distributed.build(self.spec, path)
        self.head = distributed.classifier(self.model) if self.features is not None else None
        if self.model.backend == "numba":
            kernels.warmup((str(self.model.dtype),))
        self.builds += 1
        self.data = None  # the scheduler keeps the bytes for later workers; this copy is done

    def teardown(self, worker):
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def predict(self, x: np.ndarray):
        """Preprocessed (N, H, W, 3) -> (probabilities (N, classes), features (N, C) or None)."""
        with _PREDICT_LOCK:
            if self.features is None:
                return self.model.predict(x, batch_size=len(x)), None
            f = self.features.predict(x, batch_size=len(x))
            return self.head(f), f


def _read(path: str, spec: dict):
    from .distributed import is_url
    from .image import img_to_array, load_img

    kw = dict(target_size=tuple(spec["model"]["input_shape"][:2]), interpolation=spec["interpolation"],
              keep_aspect_ratio=spec["keep_aspect_ratio"])
    if not is_url(path):
        return img_to_array(load_img(path, **kw))
    import fsspec

    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
        return img_to_array(load_img(io.BytesIO(data), **kw))
    except Exception as e:  # noqa: BLE001 -- any unreadable URL becomes this file's error
        raise OSError(f"cannot read {path!r}: {_describe(e)}") from None


def _describe(e: BaseException) -> str:
    """An unreadable file's message, as ``mnv2ref predict`` records it (OSErrors name the file already)."""
    return str(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"


def _lists(rows: list, dtype) -> pa.Array:
    """Per-row sequences (None on error rows) -> a list<dtype> Arrow array (dtype None: strings) with nulls."""
    offsets = np.cumsum([0] + [0 if r is None else len(r) for r in rows]).astype(np.int32)
    flat = [v for r in rows if r is not None for v in r] if dtype is None else \
        np.concatenate([np.asarray(r, dtype) for r in rows if r is not None] or [np.zeros(0, dtype)])
    values = pa.array(flat, pa.string() if dtype is None else None)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array([r is None for r in rows]))


def schema(features: bool, meta: dict) -> pa.Schema:
    fields = [("file", pa.string()), ("error", pa.string()), ("class_index", pa.list_(pa.int32())),
              ("wnid", pa.list_(pa.string())), ("label", pa.list_(pa.string())), ("score", pa.list_(pa.float32()))]
    if features:
        fields.append(("features", pa.list_(pa.float32())))
    return pa.schema(fields, metadata={"mnv2ref": json.dumps(meta)})


def run_chunk(name: str, index: int, files: list, part: str, meta: dict) -> dict:
    """Classify one chunk and write its part file atomically -> counts and this worker's statistics."""
    from .imagenet import preprocess_input, top_k  # top_k: the records of `mnv2ref predict`, shared

    t0 = time.perf_counter()
    worker = get_worker()
    plugin = worker.plugins.get(name)
    if plugin is None or plugin.model is None:
        raise RuntimeError(f"worker {worker.address} has no mnv2ref model {name!r} (did its setup fail? see the "
                           "worker's log)")
    spec = plugin.spec
    n = len(files)
    errors, tops, feats = [None] * n, [None] * n, [None] * n
    for start in range(0, n, spec["batch_size"]):
        batch, idx = [], []
        for j in range(start, min(start + spec["batch_size"], n)):
            try:
                batch.append(_read(files[j], spec))
                idx.append(j)
            except Exception as e:  # noqa: BLE001 -- any unreadable file: an error row, never a failed chunk
                errors[j] = _describe(e)
        if not batch:
            continue
        probs, f = plugin.predict(preprocess_input(np.stack(batch)))
        for k, (j, t) in enumerate(zip(idx, top_k(probs, spec["top"], plugin.model.classes))):
            tops[j] = t
            if f is not None:
                feats[j] = f[k]
    cols = {
        "file": pa.array(files, pa.string()),
        "error": pa.array(errors, pa.string()),
        "class_index": _lists([None if t is None else [r["class_index"] for r in t] for t in tops], np.int32),
        "wnid": _lists([None if t is None else [r["wnid"] for r in t] for t in tops], None),
        "label": _lists([None if t is None else [r["label"] for r in t] for t in tops], None),
        "score": _lists([None if t is None else [r["score"] for r in t] for t in tops], np.float32),
    }
    if spec["features"]:
        cols["features"] = _lists(feats, np.float32)
    sch = schema(spec["features"], meta)
    table = pa.Table.from_arrays([cols[f.name].cast(f.type) for f in sch], schema=sch)
    folder, base = os.path.split(part)
    tmp = os.path.join(folder, f".{base}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, part)  # a rerun of this chunk replaces it: never two parts for one chunk
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    plugin.chunks += 1
    return {"chunk": index, "rows": n, "seconds": time.perf_counter() - t0, "errors": sum(e is not None for e in errors), "worker": worker.address,
            "pid": os.getpid(), "model_builds": plugin.builds, "numba_compiles": count_compiles() - plugin.compiles_before,
            "chunks": plugin.chunks, "numba_threads": _numba_threads()}


def _numba_threads() -> int:
    from . import kernels

    return kernels.get_num_threads()
