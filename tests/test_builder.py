"""Builder tests parametrized over the zoo registry (small inputs to stay fast)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import zoo
from models import spec as S
from models.builder import Ops, build, build_block, build_head, build_preprocess, build_stem
from models.counting import count
from models.walk import walk
from models.weights import copy_weights, named_weights

SIZE = 64
NAMES = zoo.list_models()


def _images(n=2, size=SIZE, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _randomize_bn(model, seed=0):
    """Non-trivial BN statistics so equivalence tests compare more than identity-initialised layers."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))


# Building and differentiating the MixNets (grouped convs) and the SPOS nets takes seconds each: slow tier.
HEAVY = ("mixnet_s", "mixnet_m", "spos_shufflenetv2", "spos_shufflenetv2_channel")


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in NAMES])
def built(request):
    spec = zoo.get_spec(request.param)
    # Seeded: an unseeded init depends on which tests ran before, and a rare draw leaves every unit of a small
    # squeeze-excite reduce ReLU dead on the two test images (CI hit it once for mnasnet_a1), which zeroes its
    # gradients.
    keras.utils.set_random_seed(NAMES.index(request.param))
    model = build(spec, input_size=SIZE, classes=10)
    _randomize_bn(model)
    return spec, model


def test_forward_shape_and_finite(built):
    spec, model = built
    y = model(_images(), training=False).numpy()
    assert y.shape == (2, 10)
    assert np.isfinite(y).all()
    assert all(l.__class__.__module__.startswith("keras.src.layers") for l in model.layers), "stock layers only"


def test_every_trainable_variable_gets_a_gradient(built):
    _, model = built
    x = _images()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    zero = [v.path for v, g in zip(model.trainable_variables, grads) if not np.any(g.numpy())]
    assert not zero, f"all-zero gradients: {zero[:5]}"


def test_param_count_matches_analytic(built):
    spec, model = built
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == count(spec, SIZE, classes=10).params


def test_layer_names_are_deterministic(built):
    spec, model = built
    again = build(spec, input_size=SIZE, classes=10)
    assert [l.name for l in again.layers] == [l.name for l in model.layers]
    assert set(named_weights(again)) == set(named_weights(model))


def test_tf_keras_twin_is_equal(built):
    spec, model = built
    twin = build(spec, tf_keras, input_size=SIZE, classes=10)
    copy_weights(model, twin)
    x = _images()
    a = model(x, training=False).numpy()
    b = twin(x, training=False).numpy()
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max())


def test_keras_save_load_round_trip(built, tmp_path):
    _, model = built
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = _images()
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6, rtol=0)


# Every layer kind the builder emits, small enough to convert in seconds: mixed-kernel branches with a grouped
# expansion and projection, SE, hswish, relu6, swish, a residual add, a stem max pool, shuffle units (choice k and x,
# stride 2 and 1: the Reshape/Cropping2D channel split), symmetric padding and a head conv. The full-width zoo models
# are checked the same way by `python -m benchmarks.zoo_tflite_parity` (minutes per MixNet: Keras compiles grouped
# convs with XLA on CPU).
ALL_KINDS = {
    "schema_version": 1, "name": "all_kinds", "family": "mbconv", "padding": "symmetric",
    "input": {"size": 32, "mean": [127.0] * 3, "std": [128.0] * 3},
    "stem": {"filters": 16, "kernel": 3, "stride": 1, "act": "relu6", "pool": True},
    "stages": [[{"block": "ir", "kernels": [3, 5], "split": [16, 16], "expand_channels": 32, "filters": 16,
                 "stride": 1, "act": "hswish", "se_channels": 4, "expand_groups": 2, "project_groups": 2},
                {"block": "ir", "kernels": [3], "expand_channels": None, "filters": 16, "stride": 1,
                 "act": "swish"}],
               [{"block": "shuffle", "choice": "x", "filters": 32, "mid_channels": 8, "stride": 2},
                {"block": "shuffle", "choice": "5", "filters": 32, "mid_channels": 8, "stride": 1}]],
    "head": {"filters": 64, "act": "relu", "dropout": 0.1, "classes": 10}}


@pytest.mark.slow
def test_float_tflite_matches_keras_on_every_layer_kind(tmp_path):
    from ai_edge_litert.interpreter import Interpreter
    spec = S.decode(ALL_KINDS)
    keras.utils.set_random_seed(0)
    model = build(spec)
    _randomize_bn(model)
    path = str(tmp_path / "m.tflite")
    model.export(path, format="litert", verbose=False)
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = _images(1, size=32)
    it.set_tensor(inp["index"], x)
    it.invoke()
    got = it.get_tensor(out["index"])
    want = model(x, training=False).numpy()
    assert np.abs(want).max() > 1e-3  # not a vacuous comparison
    assert np.abs(got - want).max() <= 1e-4


def test_include_top_false_and_pooling():
    spec = zoo.get_spec("mobilenet_v2_100")
    feats = build(spec, include_top=False, input_shape=(SIZE, SIZE, 3))
    assert feats.output.shape == (None, 2, 2, 1280)
    pooled = build(spec, include_top=False, pooling="avg", input_size=SIZE)
    assert pooled.output.shape == (None, 1280)
    probs = build(spec, input_size=SIZE, classes=3, classifier_activation="softmax")(_images())
    with pytest.raises(Exception, match="input_shape"):
        build(spec, input_shape=(SIZE, SIZE + 1, 3))
    np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-5)


def _last_layer(model, prefix):
    """The last layer named ``{prefix}_*`` (a block's or the stem's output layer)."""
    return [l for l in model.layers if l.name.startswith(f"{prefix}_")][-1]


def _assert_walk_matches(model, w):
    assert tuple(model.get_layer("stem_conv").output.shape[1:]) == (w.stem.conv_size, w.stem.conv_size, w.stem.out_ch)
    assert tuple(_last_layer(model, "stem").output.shape[1:]) == (w.stem.out_size, w.stem.out_size, w.stem.out_ch)
    for site in w.blocks:
        assert tuple(_last_layer(model, site.name).output.shape[1:]) == (site.out_size, site.out_size, site.out_ch)
        assert any(l.name == f"{site.name}_add" for l in model.layers) == site.residual
    if w.spec.head.filters is not None:
        assert tuple(model.get_layer("head_conv").input.shape[1:]) == (w.head.in_size, w.head.in_size, w.head.in_ch)
    assert tuple(model.get_layer("pool").output.shape[1:]) == (w.head.width,)


def test_walk_matches_the_built_layers(built):
    spec, model = built
    _assert_walk_matches(model, walk(spec, SIZE))


def test_walk_matches_a_stem_pool_build():
    spec = S.decode({
        "schema_version": 1, "name": "pooled", "family": "shufflenet", "padding": "symmetric",
        "input": {"size": 37, "mean": [127.5] * 3, "std": [127.5] * 3},
        "stem": {"filters": 8, "kernel": 3, "stride": 2, "act": "relu", "pool": True},
        "stages": [[{"block": "shuffle", "choice": "x", "filters": 24, "mid_channels": 8, "stride": 2},
                    {"block": "shuffle", "choice": "5", "filters": 24, "mid_channels": 8, "stride": 1}],
                   [{"block": "ir", "kernels": [3], "expand_channels": 48, "filters": 24, "stride": 1, "act": "relu"}]],
        "head": {"filters": None, "act": "relu", "dropout": 0.0, "classes": 3}})
    w = walk(spec)
    assert (w.stem.conv_size, w.stem.out_size, w.blocks[-1].out_size, w.blocks[-1].reduction) == (19, 10, 5, 8)
    model = build(spec)
    _assert_walk_matches(model, w)
    assert trainable_count(model) == count(spec).params


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "spos_shufflenetv2"])
def test_detection_endpoints(name):
    spec = zoo.get_spec(name)
    model = build(spec, features=True, input_size=SIZE)
    assert [tuple(o.shape[1:3]) for o in model.outputs] == [(8, 8), (4, 4), (2, 2)]
    ends = walk(spec, SIZE).endpoints()
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(e.out_size, e.out_size, e.out_ch) for e in ends]
    assert [o.name for o in model.outputs] == [_last_layer(model, e.name).output.name for e in ends]


@pytest.mark.slow
def test_building_pieces_assemble_the_same_model():
    """Stem, blocks and head built piece by piece (as supernets do) give build()'s layers and weights."""
    spec = zoo.get_spec("mixnet_s")
    w = walk(spec, 32)
    o = Ops(keras, spec)
    inputs = keras.layers.Input((32, 32, 3), name="image")
    x = build_stem(o, build_preprocess(o, inputs))
    for site in w.blocks:
        x = build_block(o, x, site)
    pieces = keras.Model(inputs, build_head(o, x, classes=10), name=spec.name)
    whole = build(spec, input_size=32, classes=10)
    assert [l.name for l in pieces.layers] == [l.name for l in whole.layers]
    shapes = [{k: v.shape for k, v in named_weights(m).items()} for m in (pieces, whole)]
    assert shapes[0] == shapes[1]


def test_preprocessing_is_inside_the_model():
    spec = zoo.get_spec("efficientnet_lite0")
    model = build(spec, input_size=SIZE)
    pre = keras.Model(model.input, model.get_layer("preprocess").output)
    x = _images(1)
    want = (x - np.array(spec.input.mean, "float32")) / np.array(spec.input.std, "float32")
    np.testing.assert_allclose(pre(x), want, atol=1e-5)


@pytest.mark.slow
def test_npz_weights_move_between_frameworks(tmp_path):
    from models.weights import load_npz, save_npz, sha256
    spec = zoo.get_spec("mixnet_s")
    model = build(spec, input_size=32)
    _randomize_bn(model, seed=3)
    path = str(tmp_path / "w.npz")
    assert save_npz(model, path) == sha256(path)
    twin = build(spec, tf_keras, input_size=32)
    load_npz(twin, path)
    x = _images(size=32)
    np.testing.assert_allclose(twin(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-5)
    assert not [f for f in os.listdir(tmp_path) if f != "w.npz"], "no temp files left behind"


@pytest.mark.parametrize("kwargs,path", [
    ({"classes": 0}, "classes"), ({"classes": -1}, "classes"), ({"classes": 2.5}, "classes"),
    ({"classes": True}, "classes"), ({"classifier_activation": "sofmax"}, "classifier_activation"),
])
def test_bad_build_arguments_are_spec_errors(kwargs, path):
    with pytest.raises(S.SpecError, match=f"^{path}"):
        zoo.build("mobilenet_v2_100", input_size=32, **kwargs)


def test_build_accepts_numpy_ints_and_keras_activations():
    model = zoo.build("mobilenet_v2_100", input_size=32, classes=np.int64(3), classifier_activation="tanh")
    assert model.output_shape == (None, 3)
