"""``mnv2ref predict``: top-k ImageNet classes for image files and folders, batched, resumable.

Each image goes through exactly what the Keras recipe does:
``load_img(path, target_size=(S, S))`` (nearest resampling by default),
``img_to_array``, ``preprocess_input``, ``model.predict``,
``decode_predictions(top=k)``. A file that cannot be read as an image is
reported (stderr, and as an ``error`` record in --json / --csv output) and
skipped; it never stops the run.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

import numpy as np

from ..image import collect
from ..imagenet import top_k
from ..progress import Progress
from . import common, tflite
from . import distributed as many

OUT_EXT = {"json": (".json", ".jsonl", ".ndjson"), "csv": (".csv",)}
CSV_FIELDS = ("file", "rank", "class_index", "wnid", "label", "score", "error")


def add_parser(sub):
    p = sub.add_parser(
        "predict", help="top-k ImageNet classes for images and folders",
        description="Classify image files and folders (walked recursively; files with an image extension) with "
                    "Keras's recipe: load_img(target_size=(S, S)), preprocess_input, predict, decode_predictions. "
                    "Unreadable files are reported and skipped. Exit status 0 when the run completes (even with "
                    "skipped files), 2 on a usage or weights error.",
        epilog="examples:\n  mnv2ref predict cat.jpg --weights imagenet\n"
               "  mnv2ref predict photos/ --weights w_0.35_96.h5 --top 3 --csv preds.csv --resume\n"
               "  mnv2ref predict photos/ --json | jq .top[0].label",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders")
    common.add_weights_arg(p, default="imagenet")
    common.add_alpha_arg(p, "from the weights file; 1.0 for imagenet")
    p.add_argument("--size", type=int, metavar="S", help="input size S x S (default: from the weights file name; 224)")
    p.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per forward pass (default 32)")
    common.add_image_args(p)
    common.add_backend_arg(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", nargs="?", const="-", metavar="OUT",
                     help="JSON lines (one object per image) to stdout, or to OUT (.jsonl/.json/.ndjson)")
    out.add_argument("--csv", metavar="OUT",
                     help="CSV (one row per image and rank) to OUT (.csv), or '-' for stdout")
    p.add_argument("--resume", action="store_true",
                   help="append to the existing OUT and skip the files already in it (needs --json OUT or --csv OUT)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal and there is more than one batch)")
    many.add_args(p)  # --scheduler, --output, --features, --chunk-size: cli/distributed.py
    p.set_defaults(func=run)
    tflite.extend(p, "predict")  # --tflite FILE, --labels, --kernels, --pixels (cli/tflite.py)
    return p


# -- input files --------------------------------------------------------------------------------------------------

def key(path: str) -> str:
    """A file's identity for --resume: the same file given as a relative and an absolute path is one."""
    return os.path.normcase(os.path.abspath(path))


# -- output -------------------------------------------------------------------------------------------------------

def check_out(fmt: str, out: str | None, resume: bool):
    if out in (None, "-"):
        if resume:
            raise common.CLIError("--resume needs an output file: --json OUT.jsonl or --csv OUT.csv")
        return None
    if not out.lower().endswith(OUT_EXT[fmt]):
        raise common.CLIError(f"--{fmt} output {out!r} should end with {' or '.join(OUT_EXT[fmt])} "
                              "(a guard against overwriting an image given right after the option)")
    return out


def already_done(fmt: str, path: str) -> set:
    """Keys of the files recorded in an earlier run's output; cuts off a half-written last line."""
    if not os.path.exists(path):
        return set()
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):  # interrupted mid-line: drop the partial record
        data = data[:data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    text = data.decode("utf-8")
    done = set()
    if fmt == "json":
        for line in text.splitlines():
            if line.strip():
                try:
                    done.add(key(json.loads(line)["file"]))
                except (ValueError, KeyError, TypeError):
                    continue
    else:
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("file"):
                done.add(key(row["file"]))
    return done


class Writer:
    """Writes one record per image as it is produced (flushed per batch): text, JSON lines or CSV."""

    def __init__(self, fmt: str, stream, header: bool):
        self.fmt, self.stream = fmt, stream
        self.csv = csv.DictWriter(stream, CSV_FIELDS, lineterminator="\n") if fmt == "csv" else None
        if self.csv and header:
            self.csv.writeheader()

    def result(self, path, top):
        if self.fmt == "json":
            self.stream.write(json.dumps({"file": path, "top": top}) + "\n")
        elif self.fmt == "csv":
            for t in top:
                self.csv.writerow({"file": path, **t, "score": f"{t['score']:.6g}", "error": ""})
        else:
            lines = [path] + [f"  {t['rank']}. {t['score']:.4f}  {t['wnid']} {t['label']}" for t in top]
            self.stream.write("\n".join(lines) + "\n")

    def error(self, path, message):
        if self.fmt == "json":
            self.stream.write(json.dumps({"file": path, "error": message}) + "\n")
        elif self.fmt == "csv":
            self.csv.writerow({"file": path, "error": message})

    def flush(self):
        self.stream.flush()


# -- the command --------------------------------------------------------------------------------------------------

def run(args) -> int:
    from ..image import img_to_array, load_img
    from ..imagenet import preprocess_input

    if args.top < 1 or args.batch_size < 1:
        raise common.CLIError("--top and --batch-size must be positive")
    if many.wanted(args):
        return many.run(args)
    fmt, out, files, todo = plan(args)
    model, cfg = common.build_model(args, top=True, images=len(todo))
    hw = model.input_shape[1:3]

    def read(path):
        return img_to_array(load_img(path, target_size=hw, interpolation=args.interpolation,
                                     keep_aspect_ratio=args.keep_aspect_ratio))

    def classify(batch):
        probs = model.predict(preprocess_input(np.stack(batch)), batch_size=len(batch))
        return top_k(probs, args.top, model.classes)

    return run_batches(args, fmt, out, files, todo, read, classify)


def plan(args) -> tuple[str, str | None, list[str], list[str]]:
    """The output options and the inputs -> (format, output file or None, every input file, the files
    still to do: all of them, or with --resume those not yet in the output). Shared with ``--tflite``."""
    fmt = "json" if args.json else "csv" if args.csv else "text"
    out = check_out(fmt, args.json or args.csv, args.resume) if fmt != "text" else None
    if args.resume and out is None:
        raise common.CLIError("--resume needs an output file: --json OUT.jsonl or --csv OUT.csv")
    files = collect(args.paths)
    if not files:
        raise common.CLIError("no image files found in " + ", ".join(map(repr, args.paths)))
    done = already_done(fmt, out) if args.resume else set()
    return fmt, out, files, [f for f in files if key(f) not in done]


def describe(e: BaseException) -> str:
    """An unreadable file's message: OSErrors (and the CLI's own errors, e.g. a .npy of the wrong shape
    under --tflite) name the file already; anything else gets its type."""
    return str(e) if isinstance(e, (OSError, common.CLIError)) else f"{type(e).__name__}: {e}"


def run_batches(args, fmt: str, out: str | None, files: list[str], todo: list[str], read, classify) -> int:
    """Classify ``todo`` in batches of --batch-size, one record per file in input order, and print the
    summary; shared by the Keras model and ``--tflite``.

    ``read(path)``: one file -> the model's (H, W, 3) input; any exception makes the file an error
    record (and a line on stderr) and never stops the run. ``classify(batch)``: a list of N such inputs
    -> N top-k record lists (``Writer.result``'s). Output is flushed after each batch (--resume picks up
    from there).
    """
    if out:
        new = not (args.resume and os.path.exists(out) and os.path.getsize(out) > 0)
        stream = open(out, "w" if new else "a", encoding="utf-8", newline="")
    else:
        new, stream = True, sys.stdout
    writer = Writer(fmt, stream, header=new)
    show = args.progress if args.progress is not None else (sys.stderr.isatty() and len(todo) > args.batch_size)
    progress = Progress(len(todo), unit="images", enabled=show)
    n_ok, n_bad = 0, 0
    try:
        for i in range(0, len(todo), args.batch_size):
            chunk, batch, errors = todo[i:i + args.batch_size], [], {}
            for path in chunk:
                try:
                    batch.append(read(path))
                except Exception as e:  # any unreadable file: report, record, go on
                    errors[path] = describe(e)
                    progress.message(f"mnv2ref predict: skipped {path}: {errors[path]}")
            tops = iter(classify(batch) if batch else [])
            for path in chunk:  # records in input order
                if path in errors:
                    writer.error(path, errors[path])
                else:
                    writer.result(path, next(tops))
            n_ok, n_bad = n_ok + len(batch), n_bad + len(errors)
            writer.flush()
            progress.update(len(chunk))
    finally:
        progress.close()
        if out:
            stream.close()
    skipped = len(files) - len(todo)
    summary = f"mnv2ref predict: {n_ok} classified, {n_bad} unreadable (skipped)"
    if args.resume:
        summary += f", {skipped} already in {out}"
    if out or n_bad or args.resume:
        print(summary + (f"; results in {out}" if out else ""), file=sys.stderr)
    return 0
