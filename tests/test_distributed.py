"""``mnv2ref.distributed.predict`` on a real process cluster: ``LocalCluster(n_workers=2,
threads_per_worker=1, processes=True)``, the 0.35_96 fixture weights, a small folder of images.

One cluster is shared by the tests that kill no worker; the kill and poison tests make their own.
Skipped (with the reason) only when the ``dask`` extra is not installed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import mnv2ref
from mnv2ref import distributed as mdist

ROOT = Path(__file__).resolve().parent.parent
W35 = str(ROOT / "fixtures" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5")
try:
    mdist.require()
    HAVE_EXTRA, WHY = True, ""
except ImportError as e:
    HAVE_EXTRA, WHY = False, f"the dask extra is not installed ({e})"
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason=WHY)
CHUNK = 3  # 11 files -> 4 chunks


def _photos(d: Path) -> Path:
    """11 inputs: 10 images of different sizes and formats in nested folders, one corrupt .jpg,
    plus a text file and a hidden image that the walk must skip."""
    from PIL import Image

    rng = np.random.default_rng(7)
    (d / "b" / "c").mkdir(parents=True)
    Image.open(ROOT / "fixtures" / "shapes.png").save(d / "shapes.png")
    for i in range(9):
        sub = d if i < 3 else d / "b" if i < 6 else d / "b" / "c"
        arr = rng.integers(0, 256, (60 + 9 * i, 140 - 7 * i, 3), dtype=np.uint8)
        Image.fromarray(arr).save(sub / f"img{i}.{'jpg' if i % 2 else 'png'}")
    (d / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(d / ".hidden.png")
    return d


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _photos(tmp_path_factory.mktemp("photos"))


def _cluster(**config):
    """The LocalCluster predict(client="local:2") makes (kernels compiled here first), kept open."""
    import dask
    from distributed import Client

    with dask.config.set(config):
        cluster = mdist.local_cluster(2)
        client = Client(cluster)
    return cluster, client


@pytest.fixture(scope="module")
def client():
    if not HAVE_EXTRA:
        pytest.skip(WHY)
    cluster, client = _cluster()
    yield client
    client.close()
    cluster.close()


def read(out) -> dict:
    """{file: row dict} of a Parquet dataset; also checks one row per file."""
    import pyarrow.parquet as pq

    t = pq.read_table(str(out))
    rows = t.to_pylist()
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), "a file appears twice"
    return {r["file"]: r for r in rows}


@pytest.fixture(scope="module")
def reference(client, photos, tmp_path_factory):
    """One clean distributed run of the folder (the result the fault tests must reproduce)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = mdist.predict(photos, out, client=client, weights=W35, chunk_size=CHUNK)
    return out, summary, read(out)


@needs_extra
def test_equals_one_process_predict(reference, photos):
    out, summary, rows = reference
    p = subprocess.run([sys.executable, "-m", "mnv2ref", "predict", str(photos), "--weights", W35, "--json"],
                       capture_output=True, text=True, timeout=300, check=True)
    single = {os.path.abspath(r["file"]): r for r in map(json.loads, p.stdout.splitlines())}
    assert len(single) == 11 and set(rows) == set(single)  # nested folders walked the same way
    for f, r in rows.items():
        s = single[f]
        if "error" in s:
            assert r["error"] and r["class_index"] is None and f.endswith("broken.jpg")
            continue
        assert r["error"] is None
        assert r["class_index"] == [t["class_index"] for t in s["top"]]
        assert r["wnid"] == [t["wnid"] for t in s["top"]] and r["label"] == [t["label"] for t in s["top"]]
        np.testing.assert_array_max_ulp(np.float32(r["score"]), np.float32([t["score"] for t in s["top"]]), 1)
    assert summary["files"] == 11 and summary["errors"] == 1 and summary["classified"] == 10
    assert summary["chunks"] == summary["computed"] == 4 and summary["skipped"] == 0 and summary["failed"] == []
    assert sorted(n for n in os.listdir(out) if not n.startswith("_")) == [f"part-{i:05d}.parquet" for i in range(4)]


@needs_extra
def test_parquet_schema(reference):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = reference[0]
    schema = pq.read_schema(str(out / "part-00000.parquet"))
    assert [(f.name, f.type) for f in schema] == [
        ("file", pa.string()), ("error", pa.string()), ("class_index", pa.list_(pa.int32())),
        ("wnid", pa.list_(pa.string())), ("label", pa.list_(pa.string())), ("score", pa.list_(pa.float32()))]
    import pyarrow.dataset as ds

    t = ds.dataset(str(out), format="parquet").to_table()  # the manifest (_mnv2ref.json) is not part of it
    assert t.num_rows == 11 and t.column("error").null_count == 10


@needs_extra
def test_model_built_once_per_worker_and_no_worker_compiles(reference):
    workers = reference[1]["workers"]
    assert len(workers) == 2, workers  # both workers took chunks
    assert sum(w["chunks"] for w in workers.values()) == 4
    assert all(w["model_builds"] == 1 for w in workers.values()), workers
    assert all(w["numba_compiles"] == 0 for w in workers.values()), workers


@needs_extra
def test_compile_counter_counts_real_compilations(client):
    """The counter behind ``numba_compiles`` sees a real compilation (so the zeros above mean something)."""

    def compile_something():
        import numba

        from mnv2ref import _dask_worker

        before = _dask_worker.count_compiles()
        numba.njit(lambda x: x * 3 + 1)(2)
        return _dask_worker.count_compiles() - before

    assert all(n >= 1 for n in client.run(compile_something).values())


@needs_extra
def test_features_equal_no_top_pooled_model(client, photos, reference, tmp_path):
    out = tmp_path / "feat"
    summary = mdist.predict([photos], out, client=client, weights=W35, chunk_size=4, features=True)
    rows = read(out)
    ok = sorted(f for f, r in rows.items() if r["error"] is None)
    assert summary["errors"] == 1 and len(ok) == 10
    # MobileNetV2(include_top=False, pooling="avg") from this file (which has a top: mnv2ref.load drops it)
    model = mnv2ref.load(W35, input_shape=(96, 96, 3), alpha=0.35, include_top=False, pooling="avg")
    x = mnv2ref.preprocess_input(np.stack([mnv2ref.img_to_array(mnv2ref.load_img(f, target_size=(96, 96)))
                                           for f in ok]))
    expected = model.predict(x)
    got = np.array([rows[f]["features"] for f in ok], np.float32)
    assert got.shape == expected.shape == (10, 1280)
    np.testing.assert_array_max_ulp(got, expected, 1)
    ref = reference[2]  # one pass for both outputs: the classes are those of the classifier model
    for f in ok:
        assert rows[f]["class_index"] == ref[f]["class_index"]
        np.testing.assert_array_max_ulp(np.float32(rows[f]["score"]), np.float32(ref[f]["score"]), 1)
    assert rows[str(photos / "b" / "broken.jpg")]["features"] is None


@needs_extra
def test_resume_recomputes_only_missing_or_truncated_parts(client, photos, reference, tmp_path):
    out = tmp_path / "out"
    address = client.scheduler.address  # as a user's existing cluster: connect by address, warm per host
    first = mdist.predict(photos, out, client=address, weights=W35, chunk_size=CHUNK)
    cores = len(os.sched_getaffinity(0))
    assert all(w["numba_threads"] == max(1, cores // 2) and w["numba_compiles"] == 0
               for w in first["workers"].values()), first["workers"]
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 4
    parts[1].unlink()
    data = parts[2].read_bytes()
    parts[2].write_bytes(data[:len(data) // 2])  # an interrupted write of an older version
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (parts[0], parts[3])}
    time.sleep(0.05)
    summary = mdist.predict(photos, out, client=client, weights=W35, chunk_size=CHUNK, resume=True)
    assert summary["computed"] == 2 and summary["skipped"] == 2 and summary["files"] == 11
    assert summary["errors"] == 1  # counted over the whole dataset, skipped parts included
    assert {p: (out / p).stat().st_ino for p in kept} == {p: v[0] for p, v in kept.items()}
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == {p: v[1] for p, v in kept.items()}
    assert read(out) == reference[2]
    again = mdist.predict(photos, out, client=client, weights=W35, chunk_size=CHUNK)  # all done: nothing to do
    assert again["computed"] == 0 and again["skipped"] == 4


@needs_extra
def test_fsspec_url_inputs(photos, reference, tmp_path):
    """memory:// URLs (an in-process cluster: the memory file system is per process)."""
    import fsspec
    from distributed import Client, LocalCluster

    fs = fsspec.filesystem("memory")
    for f in reference[2]:
        fs.pipe(f"/pics{f[len(str(photos)):]}", Path(f).read_bytes())
    fs.pipe("/pics/notes.txt", b"not an image")  # skipped by the walk, as are hidden files
    fs.pipe("/pics/.hidden.png", (photos / ".hidden.png").read_bytes())
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        summary = mdist.predict("memory://pics/", tmp_path / "out", client=c, weights=W35, chunk_size=4)
    rows = read(tmp_path / "out")
    assert summary["files"] == 11 and summary["errors"] == 1
    assert {f: {k: v for k, v in r.items() if k not in ("file", "error")} for f, r in rows.items()} == \
        {"memory:///pics" + f[len(str(photos)):]: {k: v for k, v in r.items() if k not in ("file", "error")}
         for f, r in reference[2].items()}
    assert "memory:///pics/b/broken.jpg" in rows["memory:///pics/b/broken.jpg"]["error"]
    fs.rm("/pics", recursive=True)


@needs_extra
def test_other_runs_output_is_refused_before_any_work(photos, reference, tmp_path):
    out = reference[0]
    before = sorted(os.listdir(out))
    closed = "tcp://127.0.0.1:1"  # would fail if it were contacted: the check comes first
    with pytest.raises(ValueError, match=r"another run.*top: 5 there, 3 now"):
        mdist.predict(photos, out, client=closed, weights=W35, chunk_size=CHUNK, top=3)
    with pytest.raises(ValueError, match=r"another run.*chunk_size"):
        mdist.predict(photos, out, client=closed, weights=W35, chunk_size=2)
    with pytest.raises(ValueError, match=r"another run.*files"):
        mdist.predict(photos / "b", out, client=closed, weights=W35, chunk_size=CHUNK)
    assert sorted(os.listdir(out)) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="no _mnv2ref.json"):
        mdist.predict(photos, foreign, client=closed, weights=W35)


@needs_extra
def test_bad_weights_and_options_fail_before_any_work(photos, tmp_path):
    closed = "tcp://127.0.0.1:1"
    with pytest.raises(ValueError, match="Conv1"):  # the loader's error: file vs options, with the shapes
        mdist.predict(photos, tmp_path / "o", client=closed, weights=W35, alpha=1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        mdist.predict(photos, tmp_path / "o", client=closed, weights=W35, chunk_size=0)
    with pytest.raises(ValueError, match="no image files"):
        mdist.predict(tmp_path, tmp_path / "o", client=closed, weights=W35)
    assert not (tmp_path / "o").exists()


@needs_extra
def test_unreachable_scheduler_is_a_clear_error(photos, tmp_path):
    import dask

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t = time.perf_counter()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(OSError, match=rf"cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'"):
            mdist.predict(photos, tmp_path / "o", client=f"tcp://127.0.0.1:{port}", weights=W35)
    assert time.perf_counter() - t < 30
    assert not (tmp_path / "o").exists()  # nothing written


def test_missing_extra_says_what_to_install(monkeypatch, photos, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'mnv2ref\[dask\]'"):
        mdist.predict(photos, tmp_path / "o", weights=W35)
    from mnv2ref.__main__ import main

    assert main(["predict", str(photos), "--weights", W35, "--scheduler", "local", "--output", str(tmp_path)]) == 2
    assert "pip install 'mnv2ref[dask]'" in capsys.readouterr().err


@needs_extra
def test_cli_scheduler_writes_the_dataset_with_a_chunk_bar(photos, reference, tmp_path):
    out = tmp_path / "cli"
    p = subprocess.run([sys.executable, "-m", "mnv2ref", "predict", str(photos), "--weights", W35, "--scheduler",
                        "local:2", "--output", str(out), "--chunk-size", "4", "--progress"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "3/3 chunks" in p.stderr and "[" + "#" * 30 + "]" in p.stderr
    assert re.search(r"10 classified, 1 unreadable, 3 chunks \(3 computed, 0 already done, 0 failed\)", p.stderr)
    summary = json.loads(p.stdout.splitlines()[-1])
    assert summary["files"] == 11 and summary["output"] == str(out)
    assert read(out) == reference[2]


def test_cli_cluster_options_need_scheduler(photos, tmp_path, capsys):
    from mnv2ref.__main__ import main

    for extra in (["--output", str(tmp_path)], ["--features"], ["--chunk-size", "8"]):
        assert main(["predict", str(photos), "--weights", W35, *extra]) == 2
        assert "need --scheduler" in capsys.readouterr().err
    assert main(["predict", str(photos), "--weights", W35, "--scheduler", "local"]) == 2
    assert "--scheduler needs --output" in capsys.readouterr().err
    assert main(["predict", str(photos), "--weights", W35, "--scheduler", "local", "--output", str(tmp_path / "o"),
                 "--json"]) == 2
    assert not (tmp_path / "o").exists()


def test_import_needs_no_dask_or_pyarrow():
    code = ("import sys, mnv2ref, mnv2ref.distributed, mnv2ref.cli.predict; "
            "print(sorted(m for m in ('dask', 'distributed', 'pyarrow', 'fsspec') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- faults: clusters of their own ----------------------------------------------------------------------------------

class _Killer:
    """A worker plugin that SIGKILLs its worker when a matching chunk task starts executing;
    ``once``: only on the first attempt (a marker file shared by all workers decides)."""

    def __new__(cls, *a, **k):
        from distributed.diagnostics.plugin import WorkerPlugin

        class Killer(WorkerPlugin):
            name = "test-killer"

            def __init__(self, chunk, marker, once):
                self.chunk, self.marker, self.once = chunk, marker, once

            def transition(self, key, start, finish, **kwargs):
                if finish != "executing" or f"mnv2ref-chunk-{self.chunk:05d}-" not in str(key):
                    return
                if self.once:
                    try:
                        os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
                    except FileExistsError:
                        return
                os.kill(os.getpid(), signal.SIGKILL)  # the task has started (state "executing"), not finished

        return Killer(*a, **k)


@needs_extra
@pytest.mark.slow
def test_worker_killed_mid_run_loses_and_duplicates_nothing(photos, reference, tmp_path):
    cluster, client = _cluster(**{"distributed.scheduler.worker-saturation": 1.0})
    try:
        client.register_plugin(_Killer(1, str(tmp_path / "killed"), once=True))
        out = tmp_path / "out"
        summary = mdist.predict(photos, out, client=client, weights=W35, chunk_size=CHUNK)
        assert (tmp_path / "killed").exists()  # the kill happened
        assert summary["computed"] == 4 and summary["failed"] == [] and summary["files"] == 11
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith("_")) == \
            [f"part-{i:05d}.parquet" for i in range(4)]  # no temporary or duplicate part left
        assert read(out) == reference[2]  # every file once, the same results
        client.wait_for_workers(2, timeout=60)
        assert len(client.scheduler_info()["workers"]) == 2
        assert all(w["model_builds"] == 1 for w in summary["workers"].values())  # the new worker built its own
    finally:
        client.close()
        cluster.close()


@needs_extra
@pytest.mark.slow
def test_chunk_that_keeps_killing_workers_is_reported_and_others_kept(photos, reference, tmp_path):
    cluster, client = _cluster(**{"distributed.scheduler.allowed-failures": 1,
                                  "distributed.scheduler.worker-saturation": 1.0})
    try:
        client.register_plugin(_Killer(2, str(tmp_path / "unused"), once=False))
        out = tmp_path / "out"
        with pytest.raises(mdist.ChunksFailed, match=r"(?s)of 4 chunks failed.*part-00002\.parquet.*KilledWorker") as e:
            mdist.predict(photos, out, client=client, weights=W35, chunk_size=CHUNK)
        failed = {f["part"] for f in e.value.summary["failed"]}
        # Dask also blames a chunk that merely waited on a worker that died (twice, with allowed-failures=1):
        # then it is reported the same way. Every chunk not reported is written, and right.
        assert "part-00002.parquet" in failed and e.value.summary["computed"] == 4 - len(failed)
        assert sorted(p.name for p in out.glob("part-*")) == \
            [f"part-{i:05d}.parquet" for i in range(4) if f"part-{i:05d}.parquet" not in failed]
        rows = read(out)
        lost = sum(f["rows"] for f in e.value.summary["failed"])
        assert len(rows) == 11 - lost and all(rows[f] == reference[2][f] for f in rows)
    finally:
        client.close()
        cluster.close()


@needs_extra
@pytest.mark.slow
def test_cold_cache_client_compiles_workers_only_load(tmp_path):
    """A fresh NUMBA_CACHE_DIR: the client compiles, then the two local workers compile nothing."""
    _photos(tmp_path / "in")
    code = textwrap.dedent(f"""
        import json
        from mnv2ref import distributed, _dask_worker
        _dask_worker.count_compiles()
        s = distributed.predict({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, client="local:2",
                                weights={W35!r}, chunk_size=4)
        print(json.dumps({{"client": _dask_worker.count_compiles(), "workers": s["workers"]}}))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.splitlines()[-1])
    assert r["client"] > 0  # the cache was cold: the client did compile
    assert len(r["workers"]) == 2 and all(w["numba_compiles"] == 0 and w["model_builds"] == 1
                                          for w in r["workers"].values()), r
