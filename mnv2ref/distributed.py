"""Classify and embed many images on a Dask cluster: ``mnv2ref.distributed.predict``.

    import mnv2ref.distributed
    summary = mnv2ref.distributed.predict("photos/", "preds.parquet", client="tcp://scheduler:8786",
                                          weights="imagenet", features=True)

How it works (the reasons are in shared/reference/scale-out.md and the README's "Many machines"):

* The inputs are listed on the client (folders walked like ``mnv2ref predict``; ``fsspec`` URLs
  such as ``s3://bucket/photos/``), made unique and **sorted**, and cut into chunks of
  ``chunk_size`` files. Chunk ``i`` always writes ``part-{i:05d}.parquet``: a chunk that Dask runs
  twice (its worker died) replaces its part instead of adding one, and it is written to a
  temporary name then renamed (``os.replace``), so a part file is complete or absent.
* ``_mnv2ref.json`` next to the parts (the manifest: inputs, weights, options) is compared with
  the new run before any work: an output folder holding another run's parts is refused.
  ``resume=True`` skips the chunks whose part file is complete (row count and the chunk's file
  list read from the Parquet footer); so an interrupted run continues where it stopped.
* The model reaches each worker once: the weights file is read on the client and shipped inside a
  ``WorkerPlugin`` (sent once per worker by the scheduler, also to workers that start later or are
  restarted); each worker builds the model in the plugin's ``setup`` and keeps it for every chunk.
* Numba: with ``client="local"`` the client compiles (or loads) the kernels *before* the worker
  processes start, and the workers get ``NUMBA_CACHE_DIR`` and ``NUMBA_NUM_THREADS`` (their share of
  the cores) through the nanny's environment, so they only load the cache (several processes
  writing a cold cache at once is a known crash, numba#4807). On an existing cluster one worker per
  host compiles first, then every worker loads; each worker's kernel threads are set to
  ``cores of its host // workers on that host // threads per worker``.
* A file that cannot be read is a row with an ``error``; a chunk that keeps killing workers
  (Dask's ``KilledWorker``) or fails otherwise is named in ``ChunksFailed`` at the end, after all
  other chunks were written.

Output schema (one row per input file, Parquet, readable by pandas, pyarrow, DuckDB, Spark)::

    file         string                 absolute path or URL
    error        string                 null when the file was classified
    class_index  list<int32>            top-k, best first (null on error rows)
    wnid         list<string>           ImageNet WordNet ids ("" without the ImageNet classes)
    label        list<string>
    score        list<float32>
    features     list<float32>          features=True only: the pooled out_relu (1280 or 1792 wide)

Importing this module imports neither Dask nor pyarrow; ``predict`` does, and says
``pip install mnv2ref[dask]`` when they are missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import warnings

from .fileio import atomic_path

MANIFEST = "_mnv2ref.json"
PART = "part-{:05d}.parquet"
EXTRA = "pip install 'mnv2ref[dask]'"
IMAGE_OPTIONS = ("interpolation", "keep_aspect_ratio")
#: MobileNetV2 keyword arguments ``predict`` passes on (the rest of its signature is its own).
MODEL_KWARGS = ("backend", "dtype", "classes", "classifier_activation", "seed", "name")


class ChunksFailed(RuntimeError):
    """Some chunks could not be computed (e.g. they kept killing workers); every other chunk was written.

    ``summary`` is the summary ``predict`` would have returned, with ``failed``: one entry per chunk
    (part file, first and last input file, the error). Rerunning with ``resume=True`` retries only these.
    """

    def __init__(self, summary: dict):
        self.summary = summary
        lines = [f"{f['part']} (files {f['first']} .. {f['last']}): {f['error']}" for f in summary["failed"]]
        super().__init__(f"{len(lines)} of {summary['chunks']} chunks failed; the other chunks' results are in "
                         f"{summary['output']!r}:\n  " + "\n  ".join(lines))


def require():
    """Import the optional dependencies -> (dask, distributed, pyarrow); ImportError naming the extra."""
    try:
        import dask
        import distributed
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise ImportError(f"mnv2ref.distributed needs Dask distributed and pyarrow ({e}): {EXTRA}") from None
    return dask, distributed, pyarrow


# -- the model: resolved once on the client, rebuilt identically on every worker ------------------------------------

def model_spec(weights, alpha, size, top, features, model_kwargs) -> tuple[dict, bytes | None]:
    """Check the options by building the model on the client -> (spec for the workers, weights file bytes).

    Errors (ValueError/OSError naming the file and the shapes) come from the library's own loader.
    """
    from . import arch
    from .model import imagenet_rows, resolve_imagenet

    bad = sorted(set(model_kwargs) - set(MODEL_KWARGS))
    if bad:
        raise TypeError(f"predict() got unexpected keyword argument(s) {bad}; model options: {list(MODEL_KWARGS)}")
    kw = dict(model_kwargs)
    if alpha is not None:
        kw["alpha"] = alpha
    if size is not None:
        kw["input_shape"] = (int(size), int(size), 3)
    if weights in (None, "random"):
        kind, path = "random", None
        kw.setdefault("alpha", 1.0)
    else:
        kind = "file"
        if weights == "imagenet":
            kw.setdefault("alpha", 1.0)
            rows = kw["input_shape"][0] if "input_shape" in kw else 224
            if imagenet_rows(rows, rows) != rows:  # Keras's rule for the ImageNet classifier
                raise ValueError(f"weights='imagenet' with the classifier needs size in {arch.IMAGENET_ROWS}, got "
                                 f"{rows} (Keras: `input_shape` should be ({rows}, {rows}, 3) of those sizes)")
            path = resolve_imagenet(kw["alpha"], rows, True)
        else:
            path = os.fspath(weights)
        kw.pop("seed", None)
    spec = {"kind": kind, "name": os.path.basename(path) if path else f"random seed {kw.get('seed', 0)}",
            "model": kw, "features": bool(features), "top": int(top)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build(spec, path)
    # The workers build exactly this model, whatever their copy of the file is called.
    spec["model"] = dict(kw, alpha=model.alpha, input_shape=tuple(model.input_shape[1:]), classes=model.classes)
    if not model.include_top:
        raise ValueError(f"{path!r} has no classifier: predict needs one for the top-k classes")
    if top < 1 or top > model.classes:
        raise ValueError(f"top must be in [1, {model.classes}], got {top}")
    data = None
    if path is not None:
        with open(path, "rb") as f:
            data = f.read()
    spec["sha256"] = hashlib.sha256(data).hexdigest() if data is not None else None
    return spec, data


def build(spec: dict, path: str | None):
    """(model with its classifier, pooled no-top model or None): the same call on client and workers."""
    from .formats import load
    from .model import MobileNetV2

    kw = spec["model"]
    make = (lambda **k: MobileNetV2(weights=None, **k)) if spec["kind"] == "random" else \
        (lambda **k: load(path, **k))
    model = make(include_top=True, **kw)
    feats = None
    if spec["features"]:
        fkw = {k: v for k, v in kw.items() if k not in ("classes", "classifier_activation")}
        feats = make(include_top=False, pooling="avg", **fkw)
    return model, feats


def classifier(model):
    """features (N, C) -> what ``model.predict`` returns, from the model's own Dense weights: with
    ``features=True`` the backbone runs once for both outputs. The same ops as the forward pass's
    ``top`` (the kernel's ``dense`` on the numba backend, NumPy's on the numpy one, then softmax), so
    the scores equal ``model.predict``'s (checked by the tests)."""
    import numpy as np

    from . import numpy_ops

    w, b = model.params["classifier"]["w"], model.params["classifier"]["b"]
    if model.backend == "numba":
        from .kernels import dense
    else:
        dense = numpy_ops.dense
    act = model.classifier_activation

    def head(f):
        z = dense(np.ascontiguousarray(f, model.dtype), w, b)
        if act == "softmax":
            return numpy_ops.softmax(z)
        return np.asarray(act(z), model.dtype) if callable(act) else z

    return head


# -- inputs and output -----------------------------------------------------------------------------------------------

def is_url(p) -> bool:
    return isinstance(p, str) and "://" in p and not p.startswith("file://")


def list_inputs(inputs) -> list[str]:
    """Files, folders and fsspec URLs -> the sorted unique list of files (absolute paths, URLs as given)."""
    from .image import collect, image_extensions  # the walk of `mnv2ref predict`, shared

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = []
    for p in inputs:
        p = os.fspath(p)
        if is_url(p):
            files += _list_url(p, image_extensions())
        else:
            p = p[len("file://"):] if p.startswith("file://") else p
            files += [os.path.abspath(f) for f in collect([p])]
    return sorted(set(files))


def _list_url(url: str, exts) -> list[str]:
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"{url!r}: URLs need fsspec (and the package of the protocol, e.g. s3fs): "
                          "pip install fsspec") from None
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        return [url]
    found = [f for f in fs.find(root) if os.path.splitext(f)[1].lower() in exts
             and not any(part.startswith(".") for part in f[len(root.rstrip("/")):].split("/") if part)]
    return [fs.unstrip_protocol(f) for f in found]


def _sha(items) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def check_output(output: str, manifest: dict) -> bool:
    """Check that ``output`` is new or holds this run's parts -> True when its manifest must be written."""
    path = os.path.join(output, MANIFEST)
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"output {output!r} exists and is not a folder")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path!r} is not a readable mnv2ref manifest ({e}); delete the folder or choose "
                             "another output") from None
        diff = [k for k in sorted(set(old) | set(manifest)) if old.get(k) != manifest.get(k)]
        if diff:
            shown = "; ".join(f"{k}: {old.get(k)!r} there, {manifest.get(k)!r} now" for k in diff)
            raise ValueError(f"output {output!r} holds the parts of another run (different {', '.join(diff)}: "
                             f"{shown}); choose another output folder or delete it")
        return False
    if os.path.isdir(output) and any(n.endswith(".parquet") for n in os.listdir(output)):
        raise ValueError(f"output {output!r} holds Parquet files but no {MANIFEST}: not an mnv2ref run's "
                         "output; choose another folder")
    return True


def write_manifest(output: str, manifest: dict):
    path = os.path.join(output, MANIFEST)
    os.makedirs(output, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)


def part_meta(index: int, files: list[str], run: str) -> dict:
    return {"run": run, "chunk": index, "rows": len(files), "files_sha256": _sha(files)}


def part_complete(path: str, meta: dict) -> bool:
    """True when the part file exists, its footer reads, and it holds this chunk of this run."""
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path)
        mine = json.loads(md.metadata[b"mnv2ref"])
    except Exception:  # missing, truncated, not Parquet, foreign: compute it again
        return False
    return md.num_rows == meta["rows"] and mine == meta


# -- the cluster -----------------------------------------------------------------------------------------------------

def _local_workers(spec_n: str) -> int:
    n = spec_n.partition(":")[2]
    if not n:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if not n.isdigit() or int(n) < 1:
        raise ValueError(f"client={spec_n!r}: expected 'local' or 'local:N' with N >= 1 workers")
    return int(n)


def local_env(n_workers: int) -> dict:
    """Environment of local worker processes: the client's Numba cache, each its share of the cores."""
    import numba

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {"NUMBA_NUM_THREADS": str(max(1, cores // n_workers)), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if numba.config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = os.path.abspath(numba.config.CACHE_DIR)
    return env


#: glibc's largest dynamic mmap threshold (32 MiB on 64-bit). Dask's nanny sets MALLOC_TRIM_THRESHOLD_,
#: and setting any malloc variable freezes glibc's mmap threshold at 128 KiB: every large tensor of the
#: forward pass is then a fresh mmap, page-faulted in and unmapped again. Measured on 2 cores, 1.0_224,
#: batch 32, one thread: 0.67-0.78 s with Dask's setting, 0.49-0.62 with this one too, 0.60-0.69 without either.
MMAP_THRESHOLD = 32 << 20


def local_cluster(n_workers: int, dtype: str = "float32"):
    """``LocalCluster(n_workers, threads_per_worker=1, processes=True)`` set up for mnv2ref: the kernels
    compiled (or loaded) here first, the workers given this process's Numba cache, their share of the
    cores and the malloc setting above (in the nanny's pre-spawn environment: malloc reads it at exec)."""
    import dask
    from distributed import LocalCluster

    from . import kernels

    kernels.warmup((dtype,))  # compile (or load) once, before any worker process exists
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}):
        # dashboard_address=":0": a free port (None would mean the default 8787, taken by a second cluster)
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                            env=local_env(n_workers))


class _Connection:
    """``client`` argument -> a ``distributed.Client``; closes what it made."""

    def __init__(self, client, dtype: str):
        from distributed import Client

        self.made, self.cluster, self.local = [], None, False
        if client is None:
            client = os.environ.get("DASK_SCHEDULER_ADDRESS") or "local"
        if isinstance(client, str) and (client == "local" or client.startswith("local:")):
            self.cluster = local_cluster(_local_workers(client), dtype)
            self.client = Client(self.cluster)
            self.made, self.local = [self.client, self.cluster], True
        elif isinstance(client, str):
            try:
                self.client = Client(client)
            except (OSError, TimeoutError) as e:
                raise OSError(f"cannot reach the Dask scheduler at {client!r} ({e}); start one (`dask scheduler`, "
                              "see the README's 'Many machines') or pass client='local'") from None
            self.made = [self.client]
        else:
            self.client = client

    def close(self):
        for x in self.made:
            try:
                x.close()
            except Exception:  # noqa: BLE001 -- closing after an error must not hide it
                pass


def _host(address: str) -> str:
    from distributed.comm import get_address_host

    return get_address_host(address)


def _workers(client) -> dict:
    """{address: info} of every worker (recent versions list only the first 5 unless asked for all)."""
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        return client.scheduler_info(n_workers=-1)["workers"]
    return client.scheduler_info()["workers"]


def worker_threads(client) -> dict:
    """{host: Numba threads per worker}: the host's cores shared by its workers and their task threads."""
    info = _workers(client)
    cores = client.run(lambda: len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    per_host, out = {}, {}
    for addr, w in info.items():
        per_host.setdefault(_host(addr), []).append((addr, w.get("nthreads", 1)))
    for host, ws in per_host.items():
        c = max(cores.get(a, 1) for a, _ in ws)
        out[host] = max(1, c // sum(t for _, t in ws))
    return out


def _warm_one_per_host(client, dtype: str):
    """Compile (or load) the kernels on one worker per host, before every worker loads them."""
    from ._dask_worker import warm

    first = {}
    for addr in sorted(_workers(client)):
        first.setdefault(_host(addr), addr)
    if first:
        client.run(warm, dtype, workers=list(first.values()))


# -- the run ---------------------------------------------------------------------------------------------------------

def predict(inputs, output, *, client=None, weights="imagenet", alpha=None, size=None, top=5, features=False,
            chunk_size=256, resume=True, batch_size=32, interpolation="nearest", keep_aspect_ratio=False,
            progress=None, **model_kwargs) -> dict:
    """Classify (and with ``features=True`` embed) every image of ``inputs`` on a Dask cluster.

    Args:
        inputs: a file, a folder (walked like ``mnv2ref predict``), an fsspec URL (``s3://b/photos/``;
            needs fsspec and the protocol's package on the client and the workers), or a list of them.
        output: a folder the client and every worker can write (a shared file system on a real
            cluster); it becomes a Parquet dataset, one ``part-NNNNN.parquet`` per chunk (schema: see
            the module docstring) plus the manifest ``_mnv2ref.json``.
        client: a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``), ``"local"`` /
            ``"local:N"`` (a LocalCluster of N single-threaded worker processes, made and closed
            here; N = the number of cores by default), or None (``$DASK_SCHEDULER_ADDRESS``, else local).
        weights: ``"imagenet"``, a Keras file, or None / ``"random"`` (seeded random weights).
        alpha, size: the width multiplier and the square input size (default: from the file; 1.0 and
            224 for imagenet and random weights).
        top: classes per image. features: also write the pooled ``out_relu`` (the embedding).
        chunk_size: files per task and per part file. resume: skip chunks whose part is complete.
        batch_size: images per forward pass inside a chunk.
        interpolation, keep_aspect_ratio: how images are resized (``load_img``'s options).
        progress: a bar over chunks on stderr (None: when stderr is a terminal).
        **model_kwargs: ``backend``, ``dtype``, ``classes``, ``classifier_activation``, ``seed``, ``name``.

    Returns a summary: ``files``, ``classified``, ``errors`` (unreadable files), ``chunks``,
    ``computed``, ``skipped``, ``failed`` ([] here), ``seconds``, ``setup_seconds`` (of those: connecting,
    starting a local cluster, the model built on every worker), ``chunk_seconds`` (worker time spent in
    the chunks, summed), ``images_per_s`` (computed files per
    second of this run, setup included), ``output``, ``workers`` ({address: {"model_builds", "numba_compiles"
    (Numba compilations in that worker since this run's model setup began; 0 when it only loaded the
    cache), "chunks", "numba_threads"}} for the workers that computed chunks). Raises ``ChunksFailed`` (after writing every
    other chunk) when some chunks failed.
    """
    require()
    from .progress import Progress

    t0 = time.perf_counter()
    for name, v in (("chunk_size", chunk_size), ("batch_size", batch_size), ("top", top)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    from .image import INTERPOLATIONS

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    spec, data = model_spec(weights, alpha, size, top, features, model_kwargs)
    spec.update(batch_size=batch_size, interpolation=interpolation, keep_aspect_ratio=bool(keep_aspect_ratio))
    files = list_inputs(inputs)
    if not files:
        raise ValueError(f"no image files found in {inputs!r}")
    chunks = [files[i:i + chunk_size] for i in range(0, len(files), chunk_size)]
    output = os.path.abspath(os.fspath(output))
    manifest = {"mnv2ref_output": 1, "files": len(files), "files_sha256": _sha(files), "chunk_size": chunk_size,
                "chunks": len(chunks), "weights": spec["name"], "weights_sha256": spec["sha256"],
                "model": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(spec["model"].items())},
                "top": top, "features": bool(features), "interpolation": interpolation,
                "keep_aspect_ratio": bool(keep_aspect_ratio)}
    fresh = check_output(output, manifest)
    run_id = manifest["files_sha256"][:16]
    metas = [part_meta(i, c, run_id) for i, c in enumerate(chunks)]
    parts = [os.path.join(output, PART.format(i)) for i in range(len(chunks))]
    todo = [i for i in range(len(chunks)) if not (resume and part_complete(parts[i], metas[i]))]
    summary = {"files": len(files), "classified": 0, "errors": 0, "chunks": len(chunks), "computed": 0,
               "skipped": len(chunks) - len(todo), "failed": [], "seconds": 0.0, "setup_seconds": 0.0,
               "chunk_seconds": 0.0,
               "images_per_s": 0.0,
               "output": output, "workers": {}}
    computed_files = 0
    if todo:
        computed_files = _run(todo, chunks, parts, metas, spec, data, client, summary, Progress, progress,
                              (output, manifest) if fresh else None)
    computed = set(todo)
    for i in range(len(chunks)):  # error counts of the whole dataset, skipped chunks included
        if i not in computed:
            summary["errors"] += _count_errors(parts[i])
    summary["classified"] = summary["files"] - summary["errors"] - sum(f["rows"] for f in summary["failed"])
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["chunk_seconds"] = round(summary["chunk_seconds"], 3)
    summary["images_per_s"] = round(computed_files / summary["seconds"], 2) if summary["seconds"] else 0.0
    if os.path.isdir(output):
        _remove_temporaries(output)
    if summary["failed"]:
        raise ChunksFailed(summary)
    return summary


def _count_errors(path: str) -> int:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["error"])
    return t.num_rows - t.column("error").null_count


def _remove_temporaries(output: str):
    """Temporary parts left by workers killed while writing (never renamed into place)."""
    for n in os.listdir(output):
        if n.startswith(".part-") and n.endswith(".tmp"):
            try:
                os.unlink(os.path.join(output, n))
            except OSError:
                pass


def _run(todo, chunks, parts, metas, spec, data, client, summary, Progress, progress, manifest) -> int:
    from distributed import as_completed

    from ._dask_worker import ModelPlugin, run_chunk

    t0 = time.perf_counter()
    conn = _Connection(client, spec["model"].get("dtype", "float32"))
    name = f"mnv2ref-model-{uuid.uuid4().hex[:12]}"
    bar = Progress(len(todo), unit="chunks", enabled=progress)
    done_files, futures = 0, {}
    try:
        if manifest:  # only once the cluster answers: a failed start leaves nothing behind
            write_manifest(*manifest)
        c = conn.client
        threads = None
        if not conn.local:
            _warm_one_per_host(c, spec["model"].get("dtype", "float32"))
            threads = worker_threads(c)
        c.register_plugin(ModelPlugin(name, spec, data, threads))  # returns once every worker has the model
        summary["setup_seconds"] = round(time.perf_counter() - t0, 3)
        futures = {c.submit(run_chunk, name, i, chunks[i], parts[i], metas[i], key=f"mnv2ref-chunk-{i:05d}-{name}",
                            pure=False): i for i in todo}
        for fut in as_completed(list(futures)):
            i = futures[fut]
            if fut.status == "finished":
                r = fut.result()
                summary["computed"] += 1
                summary["chunk_seconds"] += r["seconds"]
                summary["errors"] += r["errors"]
                done_files += r["rows"]
                summary["workers"][r["worker"]] = {k: r[k] for k in ("model_builds", "numba_compiles", "chunks",
                                                                       "numba_threads")}
            else:
                e = fut.exception()
                summary["failed"].append({"chunk": i, "part": os.path.basename(parts[i]), "first": chunks[i][0],
                                          "last": chunks[i][-1], "rows": len(chunks[i]),
                                          "error": f"{type(e).__name__}: {e}"})
                if bar.enabled:
                    bar.message(f"mnv2ref: {summary['failed'][-1]['part']} failed: {summary['failed'][-1]['error']}")
            fut.release()
            bar.update(1)
        try:
            c.unregister_worker_plugin(name)
        except Exception:  # noqa: BLE001 -- a worker that just died; the plugin goes with the run
            pass
    except BaseException:  # Ctrl-C, a lost scheduler: stop the chunks still queued (parts written stay)
        if futures and conn.client.status == "running":
            conn.client.cancel(list(futures))
        raise
    finally:
        bar.close()
        conn.close()
    return done_files
