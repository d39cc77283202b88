"""The architecture table: channel widths, layer names, and the published MACs/parameters table."""
import re
from pathlib import Path

import pytest

from mnv2ref import arch

# The table rows of the project's seed document (the Keras MobileNetV2 API page), copied verbatim.
SEED_LOCAL = Path(__file__).resolve().parent / "data" / "seed_table.txt"
SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "000_020c0b95e9acac02.txt"


def seed_rows(path=SEED_LOCAL):
    """(alpha, rows) -> (MACs M, params M) parsed from the published table."""
    text = path.read_text()
    rows = re.findall(r"mobilenet_v2_([0-9.]+)_([0-9]+)\] \| ([0-9]+) \| ([0-9.]+)", text)
    return {(float(a), int(r)): (int(m), float(p)) for a, r, m, p in rows}


@pytest.mark.skipif(not SEED.exists(), reason="the workplace's seed document is not next to this clone")
def test_local_copy_equals_seed_document():
    assert seed_rows(SEED) == seed_rows()


def test_seed_table_is_complete():
    assert sorted(seed_rows()) == sorted((float(a), r) for a, r in arch.PUBLISHED)


@pytest.mark.parametrize("alpha,rows", arch.PUBLISHED)
def test_published_table_row_is_reproduced(alpha, rows):
    assert arch.published_row(alpha, rows) == seed_rows()[(float(alpha), rows)]


def test_exact_counts_for_1_0_224():
    assert arch.count_macs(1.0, (224, 224)) == 300_774_272
    assert arch.count_macs(0.35, (96, 96)) == 11_934_128
    assert arch.published_params(1.0) == 3_470_760
    assert arch.count_params(1.0) == 3_538_984  # Keras's model.count_params()
    assert arch.count_params(1.0, include_top=False) == 3_538_984 - 1280 * 1000 - 1000


# Widths measured on Keras's models (shared/reference/keras-facts.md): Conv1; expand->project per block; Conv_1.
WIDTHS = {
    0.35: "16; -->8 48->8 48->8+ 48->16 96->16+ 96->16+ 96->24 144->24+ 144->24+ 144->24+ 144->32 192->32+ "
          "192->32+ 192->56 336->56+ 336->56+ 336->112; 1280",
    1.0: "32; -->16 96->24 144->24+ 144->32 192->32+ 192->32+ 192->64 384->64+ 384->64+ 384->64+ 384->96 "
         "576->96+ 576->96+ 576->160 960->160+ 960->160+ 960->320; 1280",
    1.4: "48; -->24 144->32 192->32+ 192->48 288->48+ 288->48+ 288->88 528->88+ 528->88+ 528->88+ 528->136 "
         "816->136+ 816->136+ 816->224 1344->224+ 1344->224+ 1344->448; 1792",
}


@pytest.mark.parametrize("alpha", sorted(WIDTHS))
def test_channel_widths_match_keras(alpha):
    parts = [("-" if not b.has_expand else str(b.cexp)) + "->" + str(b.cout) + ("+" if b.residual else "")
             for b in arch.blocks(alpha)]
    assert f"{arch.stem_channels(alpha)}; " + " ".join(parts) + f"; {arch.last_channels(alpha)}" == WIDTHS[alpha]


def test_make_divisible_matches_keras_rule():
    assert arch.make_divisible(32 * 0.35) == 16  # min_value
    assert arch.make_divisible(int(24 * 0.35)) == 8
    assert arch.make_divisible(int(96 * 1.4)) == 136
    assert arch.make_divisible(1280 * 1.3) == 1664
    assert arch.make_divisible(44) == 48  # the torchvision-vs-Keras 1.4 difference (pytorch/vision#973)


def test_layer_names_and_order():
    names = [l.name for l in arch.layers(1.0)]
    assert len(names) == 155  # Keras's 156 layers minus the input layer
    assert names[:9] == ["Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_depthwise",
                         "expanded_conv_depthwise_BN", "expanded_conv_depthwise_relu", "expanded_conv_project",
                         "expanded_conv_project_BN", "block_1_expand"]
    assert names[-5:] == ["Conv_1", "Conv_1_bn", "out_relu", "global_average_pooling2d", "predictions"]
    assert [n for n in names if n.endswith("_pad")] == ["block_1_pad", "block_3_pad", "block_6_pad", "block_13_pad"]
    adds = [int(n.split("_")[1]) for n in names if n.endswith("_add")]
    assert adds == [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]
    assert sum(1 for l in arch.layers(1.0) if l.weights) == 105
    assert names.index("block_5_depthwise_BN") < names.index("block_5_depthwise_relu")


@pytest.mark.parametrize("hw,static,out", [
    ((224, 224), True, (7, 7)), ((225, 225), True, (8, 8)), ((225, 225), False, (7, 7)),
    ((97, 131), True, (4, 5)), ((97, 131), False, (3, 4)), ((32, 32), True, (1, 1)), ((33, 65), False, (1, 2)),
])
def test_padding_rule_static_vs_dynamic(hw, static, out):
    L = arch.layers(1.0, hw, include_top=False, static_hw=hw if static else (None, None))
    assert L[-1].shape[:2] == out


def test_correct_pad():
    assert arch.correct_pad(112, 112) == ((0, 1), (0, 1))
    assert arch.correct_pad(113, 112) == ((1, 1), (0, 1))
    assert arch.correct_pad(None, None) == ((0, 1), (0, 1))
    with pytest.raises(ValueError, match="width"):
        arch.correct_pad(113, None)
    assert arch.same_pad(224, 2) == (0, 1) and arch.same_pad(225, 2) == (1, 1) and arch.same_pad(7, 1) == (1, 1)
