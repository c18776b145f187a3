"""E-DNAS additive kernel merging (issue 18, Eq. 1-2): parallel depthwise kernels + BNs fold into one kernel and a
bias; the merged zoo model computes what the training form computes, in Keras and in float TFLite."""
import copy
import json

import keras
import numpy as np
import pytest
from conftest import run_module, write_spec

from models import spec as S
from models.builder import build
from models.weights import assign
from search.reparam import RepDepthwise, build_reparam, merge

SPEC = {"schema_version": 1, "name": "tiny_rep", "family": "mbconv",
        "input": {"size": 16, "mean": [127.5] * 3, "std": [127.5] * 3},
        "stem": {"filters": 8, "kernel": 3, "stride": 1, "act": "relu"},
        "stages": [[{"block": "ir", "kernels": [5], "expand_channels": None, "filters": 8, "stride": 1,
                     "act": "relu"},
                    {"block": "ir", "kernels": [7], "expand_channels": 24, "filters": 12, "stride": 2,
                     "act": "relu6"},
                    {"block": "ir", "kernels": [3], "expand_channels": 24, "filters": 12, "stride": 1,
                     "act": "swish"}]],
        "head": {"filters": 16, "act": "relu", "dropout": 0.0, "classes": 5}}


def _randomize(model, seed=0):
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        for w in layer.weights:
            if "moving_variance" in w.path:
                w.assign(rng.uniform(0.5, 1.5, w.shape))
            elif "moving_mean" in w.path or "beta" in w.path:
                w.assign(rng.normal(0, 0.2, w.shape))
            elif "gamma" in w.path:
                w.assign(rng.uniform(0.5, 1.5, w.shape))


def _pair():
    spec = S.decode(SPEC)
    keras.utils.set_random_seed(0)
    rep = build_reparam(spec)
    _randomize(rep)
    plain = build(spec)
    assign(plain, merge(rep, spec), source="merge")
    return spec, rep, plain


def test_training_form_has_the_parallel_kernels_and_the_zoo_names():
    spec, rep, plain = _pair()
    layers = {l.name: l for l in rep.layers if isinstance(l, RepDepthwise)}
    assert {n: l.kernels for n, l in layers.items()} == {"s0_b0_dw": (1, 3, 5), "s0_b1_dw": (1, 3, 5, 7),
                                                         "s0_b2_dw": (1, 3)}
    assert not any(l.name.endswith("_dw_bn") for l in rep.layers)
    clone = RepDepthwise.from_config(layers["s0_b1_dw"].get_config())
    assert clone.get_config() == layers["s0_b1_dw"].get_config()


def test_merged_model_equals_the_training_form():
    spec, rep, plain = _pair()
    x = np.random.RandomState(1).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    want = rep(x, training=False).numpy()
    assert np.abs(want).max() > 1e-2
    assert np.abs(plain(x, training=False).numpy() - want).max() <= 1e-4
    # Eq. 2 by hand for one layer: the merged kernel's centre holds every branch's centre tap
    layer = rep.get_layer("s0_b1_dw")
    kernel, _ = layer.merged()
    centre = 0.0
    for dw, bn in zip(layer.dws, layer.bns):  # (the stride-2 1×1 branch is a centre-masked 3×3: its centre tap too)
        c = dw.kernel.shape[0] // 2
        centre = centre + np.asarray(dw.kernel)[c, c] * (np.asarray(bn.gamma) / np.sqrt(
            np.asarray(bn.moving_variance) + bn.epsilon))[:, None]
    np.testing.assert_allclose(kernel[3, 3], centre, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_merged_model_float_tflite_matches(tmp_path):
    from export.litert import export, interpreter, op_counts, predict
    spec, rep, plain = _pair()
    path = str(tmp_path / "m.tflite")
    export(plain, path)
    x = np.random.RandomState(2).uniform(0, 255, (1, 16, 16, 3)).astype("float32")
    assert np.abs(predict(interpreter(path), x) - rep(x, training=False).numpy()).max() <= 1e-4
    export(build(spec), str(tmp_path / "plain.tflite"))  # the deployed graph is the spec's own
    assert op_counts(path) == op_counts(str(tmp_path / "plain.tflite"))


@pytest.mark.slow
def test_train_recipe_reparam_saves_merged_weights(tmp_path):
    spec_path = write_spec(tmp_path, SPEC)
    out = tmp_path / "run"
    r = run_module("recipes.train", f"--model={spec_path}", "--weights=", "--dataset=shapes", "--limit=64",
                   "--val_limit=32", "--epochs=1", "--batch_size=32", "--reparam=1,3,5,7", f"--out_dir={out}",
                   "--noprogress")
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["reparam"]["branches"] == [1, 3, 5, 7]
    model = build(S.decode(SPEC), classes=10, weights=str(out / "weights.npz"))  # the plain spec loads them
    assert model.get_layer("s0_b1_dw").kernel.shape == (7, 7, 24, 1)


def test_train_reparam_flags_are_checked():
    from common.checks import ConfigError
    from workflows import train
    bad = copy.deepcopy(SPEC)
    with pytest.raises(ConfigError, match="--reparam=1,2"):
        train.validate(train.TrainConfig(model="mobilenet_v2_100", weights="", reparam="1,2", out_dir="/tmp/x_rep"))
    with pytest.raises(ConfigError, match="takes no --weights"):
        train.validate(train.TrainConfig(model="efficientnet_lite0", weights="imagenet", reparam="1,3",
                                         out_dir="/tmp/x_rep"))
    with pytest.raises(ConfigError, match="symmetric padding"):
        train.validate(train.TrainConfig(model="spos_shufflenetv2", weights="", reparam="1,3", out_dir="/tmp/x_rep"))
    assert bad == SPEC


def test_stem_sweep_specs_build_and_bad_input_is_one_line(tmp_path):
    """benchmarks.ednas_stem (E2): every depthwise-stem variant is a valid spec that builds and costs what the
    counter says; bad flags are one line and exit 2."""
    from conftest import error_line

    from benchmarks.ednas_stem import stem_specs
    from models.counting import count, stem_cost
    from models.walk import walk
    specs = stem_specs([3, 11], 24)
    assert set(specs) == {"conv3", "dw3", "dw11"}
    for name, spec in specs.items():
        spec = S.loads(S.dumps(spec))
        assert spec.stem.depthwise is (name != "conv3")
        if name == "dw11":
            assert stem_cost(walk(spec)).macs == 32 * 32 * 24 * 11 * 11
            model = build(spec)
            assert model.output_shape == (None, 10)
            assert count(spec).params == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    for args, needle in ((["--kernels=4"], "--kernels"), (["--stem_filters=16"], "--stem_filters")):
        r = run_module("benchmarks.ednas_stem", f"--out={tmp_path / 'x.json'}", *args)
        assert needle in error_line(r, "ednas_stem"), r.stderr
