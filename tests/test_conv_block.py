"""The plain ``conv`` block (VGG style) and per-branch activations (``acts``): spec, walk, builder, counts, latency
keys, the tf_keras twin and float TFLite."""
import copy

import keras
import numpy as np
import pytest
import tf_keras

from models import spec as S
from models.builder import build
from models.counting import count
from models.walk import walk
from models.weights import copy_weights
from search import latency as L

# Odd map sizes (15 → 8 → 4) exercise the "same" pools; branches repeat a kernel size with different activations.
VGG = {"schema_version": 1, "name": "tiny_vgg", "family": "plain",
       "input": {"size": 15, "channels": 3, "mean": [127.5] * 3, "std": [127.5] * 3},
       "stem": {"filters": 8, "kernel": 3, "stride": 1, "act": "relu"},
       "stages": [[{"block": "conv", "kernels": [3], "filters": 8, "stride": 1, "act": "relu", "pool": "max"},
                   {"block": "conv", "kernels": [1, 3, 3], "split": [2, 3, 4], "acts": ["relu", "tanh", "prelu"],
                    "filters": 9, "stride": 1, "act": "relu", "pool": "avg"}],
                  [{"block": "ir", "kernels": [3, 3], "split": [6, 6], "acts": ["relu6", "prelu"],
                    "expand_channels": 12, "filters": 9, "stride": 2, "act": "relu6"},
                   {"block": "conv", "kernels": [5], "filters": 7, "stride": 1, "act": "tanh"}]],
       "head": {"filters": None, "act": "relu", "dropout": 0.0, "classes": 5}}


def _randomize(model, seed=0):
    """Random BN statistics and PReLU slopes, so comparisons see more than identity-initialised layers."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
        if isinstance(layer, keras.layers.PReLU):
            layer.alpha.assign(rng.uniform(0.05, 0.5, layer.alpha.shape).astype("float32"))


def _images(n=2, size=15):
    return np.random.RandomState(1).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_decode_encode_round_trip_and_defaults():
    spec = S.decode(VGG)
    assert S.decode(S.encode(spec)) == spec
    b0, b1 = spec.stages[0]
    assert (b0.split, b0.acts, b0.branch_acts(), b0.pool) == ((8,), None, ("relu",), "max")
    assert b1.branch_acts() == ("relu", "tanh", "prelu")
    # an ir block without acts encodes exactly as before (no "acts" key)
    ir = S.encode(S.decode(VGG)).copy()
    assert "acts" in ir["stages"][1][0] and "acts" not in S.encode(_ir_only())["stages"][0][0]


def _ir_only():
    d = copy.deepcopy(VGG)
    d["stages"] = [[{"block": "ir", "kernels": [3], "expand_channels": 16, "filters": 8, "stride": 1, "act": "relu"}]]
    return S.decode(d)


BAD = [
    ("stages[0][1].kernels", "pairs must be distinct", ("acts",), ["relu", "tanh", "tanh"]),
    ("stages[0][1].acts", "list of 3 activations", ("acts",), ["relu", "tanh"]),
    ("stages[0][1].acts[2]", "must be one of", ("acts",), ["relu", "tanh", "gelu"]),
    ("stages[0][1].split", "sums to 9 but filters is 10", ("filters",), 10),
    ("stages[0][1].pool", "must be one of max, avg", ("pool",), "min"),
    ("stages[0][1].kernels", "kernel sizes must be distinct", ("acts",), None),
    ("stages[0][1].stride", "must be <= 2", ("stride",), 3),
    ("stages[0][1].act", "must be one of", ("act",), "gelu"),
    ("stages[0][1].bits", "unknown key", ("bits",), None),
]


@pytest.mark.parametrize("path,message,key,value", BAD, ids=[f"{p}:{m}" for p, m, _, _ in BAD])
def test_bad_conv_blocks_name_the_field(path, message, key, value):
    d = copy.deepcopy(VGG)
    d["stages"][0][1][key[0]] = value
    with pytest.raises(S.SpecError, match=message) as e:
        S.decode(d)
    assert e.value.path == path


def test_several_branches_need_a_split():
    d = copy.deepcopy(VGG)
    del d["stages"][0][1]["split"]
    with pytest.raises(S.SpecError, match="required when there are several branches"):
        S.decode(d)


def test_walk_build_and_counts_agree():
    spec = S.decode(VGG)
    w = walk(spec)
    assert [(s.in_size, s.out_size, s.stride, s.reduction) for s in w.blocks] == \
        [(15, 8, 2, 2), (8, 4, 2, 4), (4, 2, 2, 8), (2, 2, 1, 8)]
    model = build(spec)
    for site in w.blocks:
        last = [l for l in model.layers if l.name.startswith(f"{site.name}_")][-1]
        assert tuple(last.output.shape[1:]) == (site.out_size, site.out_size, site.out_ch)
    names = {l.name for l in model.layers}
    assert {"s0_b0_conv", "s0_b0_bn", "s0_b0_act", "s0_b0_pool", "s0_b1_g2_conv", "s0_b1_g2_act", "s0_b1_concat",
            "s0_b1_pool", "s1_b0_g1_dw_act", "s1_b1_conv"} <= names
    assert isinstance(model.get_layer("s0_b1_g2_act"), keras.layers.PReLU)
    assert isinstance(model.get_layer("s1_b0_g1_dw_act"), keras.layers.PReLU)
    assert isinstance(model.get_layer("s0_b0_pool"), keras.layers.MaxPooling2D)
    assert isinstance(model.get_layer("s0_b1_pool"), keras.layers.AveragePooling2D)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == count(spec).params
    # MACs by hand: stem 15²·9·3·8; b0 15²·9·8·8; b1 8²·8·(1·2 + 9·3 + 9·4); ir: expand 4²·9·12, dw 2²·9·12,
    # project 2²·12·9; b3 2²·25·9·7; classifier 7·5
    macs = (225 * 27 * 8 + 225 * 72 * 8 + 64 * 8 * (2 + 27 + 36) + 16 * 9 * 12 + 4 * 9 * 12 + 4 * 12 * 9
            + 4 * 25 * 9 * 7 + 35)
    assert count(spec).macs == macs


def test_latency_keys_and_fallback_groups():
    spec = S.decode(VGG)
    keys = [p.key for p in L.parts(spec)]
    assert keys[1] == "conv|i8|n15|k3x8|o8|s1|arelu|poolmax|psame"
    assert keys[2] == "conv|i8|n8|k1x2.relu+k3x3.tanh+k3x4.prelu|o9|s1|arelu|poolavg|psame"
    assert keys[3] == "ir|i9|n4|k3x6.relu6+k3x6.prelu|e12|o9|s2|arelu6|se0|g1.1|r0|psame"
    # a search that changes widths and kernels keeps the slot's group
    assert L.slot_group(keys[2]) == L.slot_group("conv|i5|n8|k3x4|o4|s1|arelu|poolavg|psame") == \
        "conv|n8|s1|arelu|poolavg|psame"
    # an ir block without acts keeps its old key
    assert L.parts(_ir_only())[1].key == "ir|i8|n15|k3x16|e16|o8|s1|arelu|se0|g1.1|r1|psame"


def test_tf_keras_twin_matches():
    spec = S.decode(VGG)
    keras.utils.set_random_seed(0)
    model = build(spec)
    _randomize(model)
    twin = build(spec, tf_keras)
    copy_weights(model, twin)
    x = _images()
    np.testing.assert_allclose(twin(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-5)


@pytest.mark.slow
def test_float_tflite_matches_keras(tmp_path):
    from export.litert import export, interpreter, predict
    spec = S.decode(VGG)
    keras.utils.set_random_seed(0)
    model = build(spec)
    _randomize(model)
    x = _images(1)
    path = str(tmp_path / "m.tflite")
    export(model, path)
    got = predict(interpreter(path), x)
    want = model(x, training=False).numpy()
    assert np.abs(want).max() > 1e-3
    assert np.abs(got - want).max() <= 1e-4


def test_depthwise_stem():
    """E-DNAS's 11×11 depthwise stem: multiplier filters / channels; counts, key and round trip; a width that the
    input channels do not divide is refused."""
    d = copy.deepcopy(VGG)
    d["stem"] = {"filters": 12, "kernel": 11, "stride": 2, "act": "relu", "depthwise": True}
    spec = S.decode(d)
    assert S.decode(S.encode(spec)) == spec and S.encode(spec)["stem"]["depthwise"] is True
    assert "depthwise" not in S.encode(S.decode(VGG))["stem"]  # written only when set
    model = build(spec)
    stem = model.get_layer("stem_conv")
    assert isinstance(stem, keras.layers.DepthwiseConv2D) and stem.depth_multiplier == 4
    assert tuple(stem.output.shape[1:]) == (8, 8, 12)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == count(spec).params
    assert count(spec).macs - count(S.decode({**d, "stem": {**d["stem"], "kernel": 3}})).macs == 8 * 8 * 12 * (121 - 9)
    assert L.stem_key(spec, 15).endswith("|dw")
    d["stem"]["filters"] = 10
    with pytest.raises(S.SpecError, match="multiple of 3") as e:
        S.decode(d)
    assert e.value.path == "stem.filters"
