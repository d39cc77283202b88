"""The committed int8 fixtures (fixtures/int8/, made by fixtures/generate_int8.py) are what the manifest says.

NumPy-only checks always run; the live check (the installed ai-edge-litert still computes the stored tensors)
runs when ai-edge-litert is installed (``MNV2REF_REQUIRE_LITERT=1`` makes its absence a failure).
"""
import hashlib
import json
import os

import numpy as np
import pytest

from mnv2ref.fileio import sha256_file

HERE = os.path.dirname(os.path.abspath(__file__))
INT8 = os.path.join(HERE, "..", "fixtures", "int8")
MANIFEST = json.load(open(os.path.join(INT8, "manifest.json")))
GOLDENS = sorted(m["golden"] for m in MANIFEST["models"].values())


def sha(b: bytes) -> str:  # the goldens' per-tensor hash: sha256 of the C-order bytes
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_files_match_manifest(name):
    path = os.path.join(INT8, name)
    assert (os.path.getsize(path), sha256_file(path)) == (MANIFEST["files"][name]["size"],
                                                          MANIFEST["files"][name]["sha256"])


def test_configs_cover_the_issue():
    models = MANIFEST["models"]
    ios = {m["io"] for m in models.values() if "io" in m}
    assert ios == {"int8", "uint8", "float32"}
    shapes = {tuple(m["input"]["shape"]) for m in models.values()}
    assert (1, 97, 131, 3) in shapes and (1, 224, 224, 3) in shapes
    assert any(m.get("keras", {}).get("alpha") not in (None, 1.0) for m in models.values())


@pytest.mark.parametrize("golden", GOLDENS)
def test_golden_is_self_consistent(golden):
    z = np.load(os.path.join(INT8, golden))
    order, cases, full = list(z["order"]), list(z["cases"]), set(z["full_cases"])
    outputs = [int(i) for i, k in zip(z["index"], z["kind"]) if k == "output"]
    assert order[0] == int(z["index"][list(z["kind"]).index("input")])
    assert len(set(order)) == len(order) and set(outputs) <= set(order)
    for case in cases:
        hashes = z[f"sha256/{case}"]
        assert len(hashes) == len(order)
        if case in full:
            assert np.array_equal(z[f"ref/{case}/{order[0]}"], z[f"input/{case}"])
        for j, i in enumerate(order):
            key = f"ref/{case}/{i}"
            if case in full or i in outputs:
                a = z[key]
                assert a.dtype == np.dtype(str(z["dtype"][list(z["index"]).index(i)]))
                assert tuple(a.shape) == tuple(z[f"shape/{i}"])
                assert sha(np.ascontiguousarray(a).tobytes()) == hashes[j], (golden, key)
            else:
                assert key not in z.files
        for i in outputs:
            assert z[f"auto/{case}/{i}"].shape == z[f"ref/{case}/{i}"].shape
    # the inputs differ, so the BUILTIN_REF features do too (the model is not input-independent); the last
    # MEAN / FULLY_CONNECTED output, not the softmax: 1000 int8 probabilities at scale 1/256 are nearly all -128
    names = list(z["ops/name"])
    last = max(k for k, n in enumerate(names) if n in ("MEAN", "FULLY_CONNECTED", "AVERAGE_POOL_2D"))
    j = order.index(int(z[f"ops/outputs/{last}"][0]))
    assert len({z[f"sha256/{c}"][j] for c in cases}) == len(cases)


def _litert():
    if os.environ.get("MNV2REF_REQUIRE_LITERT") == "1":
        import ai_edge_litert.interpreter as m
        return m
    return pytest.importorskip("ai_edge_litert.interpreter", reason="needs ai-edge-litert")


@pytest.mark.parametrize("name", [n for n, m in MANIFEST["models"].items() if "io" in m])
def test_installed_litert_reproduces_the_golden(name):
    """Every stored tensor and hash, every case, recomputed by the installed BUILTIN_REF kernels."""
    lite = _litert()
    z = np.load(os.path.join(INT8, MANIFEST["models"][name]["golden"]))
    it = lite.Interpreter(model_path=os.path.join(INT8, name), num_threads=1,
                          experimental_op_resolver_type=lite.OpResolverType.BUILTIN_REF,
                          experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    for j, i in enumerate(z["const_index"]):
        assert sha(np.ascontiguousarray(it.get_tensor(int(i))).tobytes()) == z["const_sha256"][j]
    order = [int(i) for i in z["order"]]
    for case in z["cases"]:
        it.set_tensor(order[0], z[f"input/{case}"])
        it.invoke()
        got = [sha(np.ascontiguousarray(it.get_tensor(i)).tobytes()) for i in order]
        bad = [z["name"][list(z["index"]).index(i)] for i, g, w in zip(order, got, z[f"sha256/{case}"]) if g != w]
        assert not bad, (name, case, bad[:3])
