"""The MobileNetV2 architecture as data.

Everything else -- the forward pass, the Keras layer names, the weight loader,
the parameter and multiply-add counts, the summaries -- iterates over the
tables built here, so the architecture is written exactly once.

Source: Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks" (CVPR 2018), Table 2, and Keras's
``keras/src/applications/mobilenet_v2.py`` (17 ``_inverted_res_block`` calls,
``_make_divisible`` channel rounding, the ``alpha > 1`` last-conv rule).

Paper Table 2 (input 224x224x3)::

    input      operator      t    c     n  s
    224^2x3    conv2d 3x3    -    32    1  2      -> Conv1
    112^2x32   bottleneck    1    16    1  1      -> expanded_conv (block 0)
    112^2x16   bottleneck    6    24    2  2      -> block_1, block_2
    56^2x24    bottleneck    6    32    3  2      -> block_3 .. block_5
    28^2x32    bottleneck    6    64    4  2      -> block_6 .. block_9
    14^2x64    bottleneck    6    96    3  1      -> block_10 .. block_12
    14^2x96    bottleneck    6    160   3  2      -> block_13 .. block_15
    7^2x160    bottleneck    6    320   1  1      -> block_16
    7^2x320    conv2d 1x1    -    1280  1  1      -> Conv_1
    7^2x1280   avgpool 7x7   -    -     1  -      -> global_average_pooling2d
    1x1x1280   conv2d 1x1    -    k     -         -> predictions (Dense)
"""
from __future__ import annotations

from dataclasses import dataclass

#: Paper Table 2, bottleneck rows: (t expansion, c output channels, n repeats, s first stride).
TABLE2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32  # Conv1 width before alpha
LAST_CHANNELS = 1280  # Conv_1 width (scaled only when alpha > 1)
BN_EPSILON = 1e-3  # every BatchNormalization in Keras's MobileNetV2
RELU6_MAX = 6.0

#: alpha values for which Keras publishes ImageNet weights.
IMAGENET_ALPHAS = (0.35, 0.50, 0.75, 1.0, 1.3, 1.4)
#: input sizes for which Keras publishes ImageNet weights.
IMAGENET_ROWS = (96, 128, 160, 192, 224)
#: the 22 published (alpha, rows) models of the seed table.
PUBLISHED = tuple(
    [(a, r) for a in (0.35, 0.5, 0.75, 1.0) for r in IMAGENET_ROWS] + [(1.3, 224), (1.4, 224)]
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (Keras's ``_make_divisible``).

    ``new = max(min_value, int(v + divisor/2) // divisor * divisor)``, bumped by
    one ``divisor`` if that lost more than 10% of ``v``.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class Block:
    """One inverted residual block: [expand 1x1 -> ReLU6] -> depthwise 3x3 -> ReLU6 -> project 1x1 (+ input).

    ``prefix`` is Keras's name prefix: ``expanded_conv_`` for block 0 (which has
    no expand conv) and ``block_{i}_`` otherwise.
    """

    index: int
    t: int  # expansion factor
    cin: int  # input channels
    cexp: int  # channels after expansion (= cin when t == 1: no expand conv)
    cout: int  # output (bottleneck) channels
    stride: int

    @property
    def prefix(self) -> str:
        return f"block_{self.index}_" if self.index else "expanded_conv_"

    @property
    def has_expand(self) -> bool:
        return self.index != 0  # Keras: `if block_id:` -- block 0 has no expand conv

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


def stem_channels(alpha: float) -> int:
    return make_divisible(STEM_CHANNELS * alpha, 8)


def last_channels(alpha: float) -> int:
    # "no alpha applied to last conv as stated in the paper" -- except when it widens.
    return make_divisible(LAST_CHANNELS * alpha, 8) if alpha > 1.0 else LAST_CHANNELS


def blocks(alpha: float) -> list[Block]:
    """The 17 inverted residual blocks for width multiplier ``alpha``, derived from TABLE2."""
    out, cin, index = [], stem_channels(alpha), 0
    for t, c, n, s in TABLE2:
        cout = make_divisible(int(c * alpha), 8)  # Keras: int() first, then round to 8
        for i in range(n):
            out.append(Block(index, t, cin, t * cin, cout, s if i == 0 else 1))
            cin, index = cout, index + 1
    return out


# ---------------------------------------------------------------------------
# Layer list: the Keras layers in model order, with shapes and counts.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One Keras layer. ``kind`` is the Keras class name; ``shape`` is the output
    shape without the batch axis (ints, or None for unknown spatial sizes);
    ``weights`` lists the shapes of its arrays in Keras's ``weight_names`` order."""

    name: str
    kind: str
    shape: tuple
    weights: tuple = ()
    macs: int = 0
    pad: tuple | None = None  # ((top, bottom), (left, right)) for ZeroPadding2D / 'same' convs
    stride: int = 1


def same_pad(size: int, stride: int, k: int = 3) -> tuple[int, int]:
    """TensorFlow 'SAME' padding for one axis: total = max((ceil(n/s)-1)*s + k - n, 0), extra at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def correct_pad(h: int | None, w: int | None, k: int = 3) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's ``imagenet_utils.correct_pad`` for the ZeroPadding2D before a stride-2 depthwise.

    Decided from the *static* shape when the model is built: an unknown height
    (a model built with ``input_shape=(None, None, 3)``) pads (0, 1) on both
    axes whatever the real size; a known size pads (0, 1) if even, (1, 1) if odd.
    """
    c = k // 2
    if h is None:
        adjust = (1, 1)
    else:
        if w is None:  # Keras evaluates `None % 2` here and fails; so do we, clearly
            raise ValueError(
                f"input_shape with a fixed height ({h}) but no width cannot be built (Keras's correct_pad "
                "fails on it too); give both or neither"
            )
        adjust = (1 - h % 2, 1 - w % 2)
    return (c - adjust[0], c), (c - adjust[1], c)


def conv_out(size: int | None, pad: tuple[int, int], stride: int, k: int = 3) -> int | None:
    return None if size is None else (size + pad[0] + pad[1] - k) // stride + 1


def layers(
    alpha: float,
    input_hw: tuple = (224, 224),
    include_top: bool = True,
    pooling: str | None = None,
    classes: int = 1000,
    static_hw: tuple | None = None,
) -> list[Layer]:
    """Every Keras layer of MobileNetV2 (except the input layer), in Keras's model order.

    ``input_hw`` is the real (H, W) the shapes and multiply-adds are computed
    for; ``static_hw`` is the (H, W) the model was built with ((None, None) for a
    dynamic model), which decides the stride-2 padding like Keras. By default
    the model is static at ``input_hw``.
    """
    if static_hw is None:
        static_hw = input_hw
    H, W = input_hw
    sh, sw = static_hw
    c = stem_channels(alpha)
    ph, pw = same_pad(H, 2), same_pad(W, 2)
    H, W = conv_out(H, ph, 2), conv_out(W, pw, 2)
    sh, sw = conv_out(sh, same_pad(sh, 2), 2) if sh else None, conv_out(sw, same_pad(sw, 2), 2) if sw else None
    L = [
        Layer("Conv1", "Conv2D", (H, W, c), ((3, 3, 3, c),), H * W * 27 * c, (ph, pw), 2),
        Layer("bn_Conv1", "BatchNormalization", (H, W, c), ((c,),) * 4),
        Layer("Conv1_relu", "ReLU", (H, W, c)),
    ]
    for b in blocks(alpha):
        p = b.prefix
        if b.has_expand:
            L += [
                Layer(p + "expand", "Conv2D", (H, W, b.cexp), ((1, 1, b.cin, b.cexp),), H * W * b.cin * b.cexp),
                Layer(p + "expand_BN", "BatchNormalization", (H, W, b.cexp), ((b.cexp,),) * 4),
                Layer(p + "expand_relu", "ReLU", (H, W, b.cexp)),
            ]
        if b.stride == 2:
            pad = correct_pad(sh, sw)
            L.append(Layer(p + "pad", "ZeroPadding2D", (H + sum(pad[0]), W + sum(pad[1]), b.cexp), pad=pad))
            H, W = conv_out(H, pad[0], 2), conv_out(W, pad[1], 2)
            sh, sw = conv_out(sh, pad[0], 2), conv_out(sw, pad[1], 2)
            dpad = ((0, 0), (0, 0))  # 'valid' after the explicit padding
        else:
            dpad = ((1, 1), (1, 1))  # 'same' at stride 1
        L += [
            Layer(p + "depthwise", "DepthwiseConv2D", (H, W, b.cexp), ((3, 3, b.cexp, 1),), H * W * 9 * b.cexp,
                  dpad, b.stride),
            Layer(p + "depthwise_BN", "BatchNormalization", (H, W, b.cexp), ((b.cexp,),) * 4),
            Layer(p + "depthwise_relu", "ReLU", (H, W, b.cexp)),
            Layer(p + "project", "Conv2D", (H, W, b.cout), ((1, 1, b.cexp, b.cout),), H * W * b.cexp * b.cout),
            Layer(p + "project_BN", "BatchNormalization", (H, W, b.cout), ((b.cout,),) * 4),
        ]
        if b.residual:
            L.append(Layer(p + "add", "Add", (H, W, b.cout)))
    cin, c = blocks(alpha)[-1].cout, last_channels(alpha)
    L += [
        Layer("Conv_1", "Conv2D", (H, W, c), ((1, 1, cin, c),), H * W * cin * c),
        Layer("Conv_1_bn", "BatchNormalization", (H, W, c), ((c,),) * 4),
        Layer("out_relu", "ReLU", (H, W, c)),
    ]
    if include_top or pooling == "avg":
        L.append(Layer("global_average_pooling2d", "GlobalAveragePooling2D", (c,)))
    elif pooling == "max":
        L.append(Layer("global_max_pooling2d", "GlobalMaxPooling2D", (c,)))
    if include_top:
        L.append(Layer("predictions", "Dense", (classes,), ((c, classes), (classes,)), c * classes))
    return L


def weighted_layers(alpha: float, include_top: bool = True, classes: int = 1000) -> list[Layer]:
    """The layers that carry weights, in model order: what Keras's positional loader matches."""
    return [l for l in layers(alpha, (224, 224), include_top, None, classes) if l.weights]


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def count_params(alpha: float, include_top: bool = True, classes: int = 1000) -> int:
    """Keras's ``model.count_params()``: every array, batch-norm's four included."""
    return sum(_size(s) for l in weighted_layers(alpha, include_top, classes) for s in l.weights)


def count_macs(alpha: float, input_hw=(224, 224), include_top: bool = True, classes: int = 1000,
               static_hw=None) -> int:
    """Multiply-adds of the convolutions, depthwise convolutions and the classifier.

    The seed table's convention (see shared/reference/keras-facts.md, section 1):
    batch-norm, ReLU6, padding, residual adds and pooling are not counted.
    """
    return sum(l.macs for l in layers(alpha, input_hw, include_top, None, classes, static_hw))


def published_params(alpha: float, classes: int = 1000) -> int:
    """The seed table's parameter convention: conv + depthwise + dense weights and dense bias, no batch-norm."""
    return sum(_size(l.weights[0]) + (classes if l.kind == "Dense" else 0)
               for l in weighted_layers(alpha, True, classes) if l.kind != "BatchNormalization")


def published_row(alpha: float, rows: int) -> tuple[int, float]:
    """(MACs in millions floored, parameters in millions rounded to 0.01), as printed in the seed table."""
    return count_macs(alpha, (rows, rows)) // 1_000_000, round(published_params(alpha) / 1e6, 2)
