"""Running ai-edge-litert for the int8 parity tests and the XNNPACK agreement table (never the library).

* ``run(model, x, resolver)``: every tensor TFLite computed (``"ref"``: BUILTIN_REF with
  ``experimental_preserve_all_tensors``; ``"auto"``: the default resolver, XNNPACK applied), keyed by
  tensor name. ``model`` is a path or the bytes of a flatbuffer.
* ``expose_all(path) -> bytes``: the same model with every computed tensor made a graph output.
  Inside an XNNPACK partition intermediate tensors are not written back, so this is how the
  default path's per-op results are read (the ops and their arithmetic are unchanged; only the
  partition's outputs grow). Uses the schema module ai-edge-litert ships (object API).
"""
from __future__ import annotations

import numpy as np


def _interpreter(model, resolver: str, preserve: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    r = {"ref": OpResolverType.BUILTIN_REF, "auto": OpResolverType.AUTO}[resolver]
    kw = {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    return Interpreter(**kw, experimental_op_resolver_type=r, experimental_preserve_all_tensors=preserve,
                       num_threads=1)


def run(model, x, resolver: str = "ref") -> dict:
    it = _interpreter(model, resolver, preserve=resolver == "ref")
    d = it.get_input_details()[0]
    if tuple(d["shape"]) != x.shape:
        it.resize_tensor_input(d["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(d["index"], x)
    it.invoke()
    if resolver == "ref":
        details = it.get_tensor_details()
    else:   # only graph outputs are meaningful with XNNPACK applied
        details = it.get_output_details()
    out = {}
    for t in details:
        try:
            out[t["name"]] = it.get_tensor(t["index"]).copy()
        except ValueError:
            pass
    return out


def expose_all(path) -> bytes:
    """The flatbuffer at ``path`` with every operator output listed as a subgraph output."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    buf = open(path, "rb").read()
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    g = model.subgraphs[0]
    outs = [int(i) for op in g.operators for i in op.outputs]
    g.outputs = np.array(list(dict.fromkeys([int(i) for i in g.outputs] + outs)), np.int32)
    b = flatbuffers.Builder(len(buf) + 4096)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
