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


def make_legacy_layout(path, seed: int = 0) -> None:
    """Write a converter-made uint8-I/O MobileNetV2 (0.35, 96x96) in the older layout TF1-era files use:
    an explicit PAD before a 'valid' stem convolution (1 pixel on every side, which the converter
    cannot fold into 'SAME', so the PAD op stays), per-tensor int8 weights
    (``_experimental_disable_per_channel``), AVERAGE_POOL_2D, a 1x1 CONV_2D classifier and a RESHAPE
    with a constant shape (batch 1). Needs tensorflow and tf_keras."""
    import tensorflow as tf
    import tf_keras

    from mnv2ref.testing import keras_weights
    base = tf_keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, include_top=False)
    base.set_weights(keras_weights(base, seed))
    inp = tf_keras.Input((96, 96, 3), batch_size=1)
    x = tf_keras.layers.ZeroPadding2D(((1, 1), (1, 1)))(inp)
    conv1 = base.get_layer("Conv1")
    stem = tf_keras.layers.Conv2D(conv1.filters, 3, strides=2, padding="valid", use_bias=False, name="stem")
    x = stem(x)
    stem.set_weights(conv1.get_weights())
    x = tf_keras.Model(base.get_layer("bn_Conv1").input, base.output)(x)
    x = tf_keras.layers.AveragePooling2D(3)(x)
    x = tf_keras.layers.Conv2D(10, 1, name="Logits")(x)
    x = tf_keras.layers.Softmax()(tf_keras.layers.Reshape((10,))(x))
    model = tf_keras.Model(inp, x)
    rng = np.random.default_rng(seed + 1)

    def representative():
        for _ in range(8):
            yield [rng.uniform(-1, 1, size=(1, 96, 96, 3)).astype(np.float32)]
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = representative
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = c.inference_output_type = tf.uint8
    c._experimental_disable_per_channel = True
    with open(path, "wb") as f:
        f.write(c.convert())
