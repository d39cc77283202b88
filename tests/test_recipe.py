"""The one weight recipe (mnv2ref.testing) reproduces every committed weight fixture, value for value, without TF."""
import json
import os

import numpy as np
import pytest

from mnv2ref import arch, formats, testing

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
MANIFEST = json.load(open(os.path.join(FIX, "manifest.json")))
FORMATS = json.load(open(os.path.join(FIX, "formats_manifest.json")))

# (file, seed, kernel recipe): the float goldens' two weight files, then the format fixtures'
FILES = [(os.path.join(FIX, c["weights_file"]), c["seeds"]["weights"], MANIFEST["weight_recipe"]["name"])
         for c in MANIFEST["fixtures"].values()]
FILES += [(os.path.join(FIX, "formats", n), f["seed"], "keras-default")
          for n, f in sorted(FORMATS["files"].items()) if "seed" in f]


def file_arrays(path):
    return [(w, a) for layer in formats.read(path).layers for w, a in layer.weights]


@pytest.mark.parametrize("path,seed,kernels", FILES, ids=[os.path.basename(f[0]) for f in FILES])
def test_recipe_reproduces_committed_file(path, seed, kernels):
    got = file_arrays(path)
    want = testing.realistic([(None, testing.variable_kind(w), a.shape) for w, a in got], seed, kernels)
    assert len(got) == len(want)
    for (w, a), b in zip(got, want):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b), w


@pytest.mark.parametrize("key", sorted(MANIFEST["fixtures"]))
def test_realistic_raw_is_the_float_fixture(key):
    """realistic_raw (from arch, no file) gives the float goldens' weights: arch's layer order is Keras's."""
    cfg = MANIFEST["fixtures"][key]
    raw = testing.realistic_raw(cfg["alpha"], cfg["include_top"], cfg["classes"] or 1000, cfg["seeds"]["weights"])
    flat = [a for d in raw.values() for a in d.values()]
    got = [a for _, a in file_arrays(os.path.join(FIX, cfg["weights_file"]))]
    assert len(flat) == len(got) and all(np.array_equal(a, b) for a, b in zip(flat, got))
    assert list(raw) == [l.name for l in arch.weighted_layers(cfg["alpha"], cfg["include_top"], 1000)]


def test_recipe_statistics_and_errors():
    raw = testing.realistic_raw(0.35, seed=7)
    dw = raw["block_3_depthwise"]["kernel"]
    assert dw.shape == (3, 3, 48, 1) and 0.55 < np.abs(dw).max() <= np.sqrt(3 / 9)  # true fan-in 9
    pw = raw["block_3_expand"]["kernel"]
    assert np.abs(pw).max() <= np.sqrt(3 / pw.shape[2])
    g = raw["bn_Conv1"]["gamma"]
    assert g.min() >= 0.5 and g.max() <= 1.5
    glorot = testing.realistic_raw(0.35, seed=7, kernels="keras-default")["block_3_depthwise"]["kernel"]
    assert np.abs(glorot).max() <= np.sqrt(6 / (9 * 48 + 9))
    assert not np.array_equal(testing.realistic_raw(0.35, seed=8)["Conv1"]["kernel"], raw["Conv1"]["kernel"])
    with pytest.raises(ValueError, match="unknown kernel recipe 'he'"):
        testing.realistic_raw(0.35, kernels="he")
    with pytest.raises(ValueError, match="no recipe for a variable of kind 'embeddings'"):
        testing.realistic([(None, "embeddings", (3, 4))], 0)
