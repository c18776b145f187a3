"""Input normalisation folded into the stem (export/fold.py): the folded model equals the zoo model with its
``preprocess`` layer on raw pixels — borders included — for every kind of stem padding and normalisation."""
import numpy as np
import pytest
from conftest import randomized_weights, tiny_spec_dict

from export.fold import fold_preprocessing, same_padding, stem_padding, unfold_weights
from models import spec as S
from models.builder import build
from models.weights import named_weights

IMAGENET = {"size": 32, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def _spec(padding="same", kernel=3, stride=2, size=32, inp=None, depthwise=False, border="mean"):
    stem = {"filters": 9 if depthwise else 8, "kernel": kernel, "stride": stride, "act": "relu"}
    if depthwise:
        stem["depthwise"] = True
    d = tiny_spec_dict(padding=padding, stem=stem)
    d["input"] = dict(inp or d["input"], size=size)
    if border != "mean":
        d["input"]["border"] = border
    return S.decode(d)


def test_same_padding_matches_tf():
    assert same_padding(224, 3, 2) == (0, 1) and same_padding(225, 3, 2) == (1, 1)
    assert same_padding(32, 3, 1) == (1, 1) and same_padding(32, 1, 1) == (0, 0) and same_padding(33, 5, 2) == (2, 2)


@pytest.mark.parametrize("padding, kernel, stride, size, inp, depthwise, border", [
    ("same", 3, 2, 32, None, False, "mean"),          # TF same, stride 2, even input: one pixel after; one mean (PADV2)
    ("same", 3, 2, 33, IMAGENET, False, "mean"),      # odd input: both sides; per-channel means (PAD + ADD)
    ("symmetric", 3, 2, 32, IMAGENET, False, "mean"),  # explicit symmetric padding (PyTorch-converted models)
    ("same", 5, 1, 32, None, False, "mean"),          # stride 1, two pixels each side
    ("same", 1, 1, 32, IMAGENET, False, "mean"),      # no padding at all: nothing added
    ("same", 11, 2, 32, IMAGENET, True, "mean"),      # E-DNAS 11×11 depthwise stem, multiplier 3
    ("same", 3, 2, 33, IMAGENET, False, "black"),     # black border: the folded build is the plain conv
    ("symmetric", 3, 2, 32, IMAGENET, False, "black"),
    ("same", 11, 2, 32, IMAGENET, True, "black"),
])
def test_folded_model_equals_the_zoo_model(padding, kernel, stride, size, inp, depthwise, border):
    spec = _spec(padding, kernel, stride, size, inp, depthwise, border)
    model = build(spec)
    arrays = randomized_weights(model, seed=1)
    from models.weights import assign
    assign(model, arrays)
    before = [np.array(w) for w in model.get_weights()]
    folded = fold_preprocessing(model, spec, size)
    x = np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype("float32")
    x[:, 0, :, :] = 255.0  # bright borders: a wrong pad value shows at once
    x[:, :, -1, :] = 0.0
    ref, got = model.predict(x, verbose=0), folded.predict(x, verbose=0)
    scale = np.abs(ref).max()
    assert scale > 1e-2  # non-vacuous logits
    assert np.abs(got - ref).max() <= 1e-4 * scale, (np.abs(got - ref).max(), scale)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the source is untouched
    names = {layer.name for layer in folded.layers}
    assert "preprocess" not in names and f"{spec.name}_body" not in names  # one flat graph
    pads = stem_padding(spec, size) != (0, 0)
    assert ("stem_border_pad" in names) == (pads and border == "mean")  # a black border folds with no op added
    assert ("stem_border_pad" in {layer.name for layer in model.layers}) == (pads and border == "black")
    # the fold is exactly invertible (QAT fine-tunes the folded form and saves zoo weights)
    zoo_w = named_weights(model)
    back = unfold_weights(spec, named_weights(folded))
    assert set(back) == set(zoo_w)
    for key, a in zoo_w.items():
        np.testing.assert_allclose(back[key], a, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(a).max())))


def test_black_border_is_raw_zero_pixels():
    """``input.border="black"``: the stem sees raw 0 pixels beyond the edge — the same network as the mean border
    inside, different on the border outputs only; the normalised-input build pads with ``−mean / std``."""
    from models.weights import assign
    mean_spec, black_spec = _spec(inp=IMAGENET), _spec(inp=IMAGENET, border="black")
    assert S.encode(black_spec)["input"]["border"] == "black" and "border" not in S.encode(mean_spec)["input"]
    assert S.decode(S.encode(black_spec)) == black_spec
    with pytest.raises(S.SpecError, match=r"input\.border: must be one of mean, black"):
        S.decode({**S.encode(black_spec), "input": {**S.encode(black_spec)["input"], "border": "white"}})
    models = {}
    for name, spec in (("mean", mean_spec), ("black", black_spec)):
        models[name] = build(spec, include_top=False)
        assign(models[name], randomized_weights(models[name], seed=4))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    stem = {k: m.get_layer("stem_act").output for k, m in models.items()}
    import keras
    got = {k: keras.Model(models[k].input, stem[k])(x).numpy() for k in models}
    inside = np.abs(got["mean"][:, :-1, :-1] - got["black"][:, :-1, :-1]).max()  # SAME at 32, stride 2: pad after
    border = np.abs(got["mean"][:, -1] - got["black"][:, -1]).max()
    assert inside < 1e-5 and border > 1e-2, (inside, border)
    normed = build(black_spec, include_top=False, include_preprocessing=False)
    normed.set_weights(models["black"].get_weights())
    z = ((x - np.asarray(IMAGENET["mean"])) / np.asarray(IMAGENET["std"])).astype("float32")
    np.testing.assert_allclose(normed(z).numpy(), models["black"](x).numpy(), atol=1e-4)


@pytest.mark.slow
def test_folded_tflite_has_no_per_pixel_normalisation(tmp_path):
    """The float file of a one-mean model has a PADV2 where the zoo model has MUL + ADD; LiteRT agrees with Keras."""
    from export import litert
    spec = _spec()
    model = build(spec)
    from models.weights import assign
    assign(model, randomized_weights(model, seed=2))
    folded = fold_preprocessing(model, spec, 32)
    plain, fold = tmp_path / "plain.tflite", tmp_path / "fold.tflite"
    litert.export(model, str(plain), "float32")
    litert.export(folded, str(fold), "float32")
    ops_plain, ops_fold = litert.op_counts(str(plain)), litert.op_counts(str(fold))
    # the preprocess layer's MUL + ADD are gone (the tiny spec's swish and SE keep other MULs), one PADV2 came
    assert ops_fold.get("MUL", 0) == ops_plain["MUL"] - 1 and ops_fold.get("ADD", 0) == ops_plain["ADD"] - 1
    assert ops_fold.get("PADV2") == 1 and "PADV2" not in ops_plain
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    ref = model.predict(x, verbose=0)
    got = litert.predict(litert.interpreter(str(fold)), x)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def _export_int8_io(tmp_path, spec_dict: dict, model):
    """``recipes.export_tflite --mode=int8 --int8_io`` of the spec ``spec_dict`` with ``model``'s weights:
    (the .tflite path, its report)."""
    import json

    from conftest import run_module

    from models.weights import save_npz
    (tmp_path / "s.json").write_text(json.dumps(spec_dict))
    save_npz(model, str(tmp_path / "w.npz"))
    out = tmp_path / "m.tflite"
    r = run_module("recipes.export_tflite", f"--model={tmp_path / 's.json'}", f"--weights={tmp_path / 'w.npz'}",
                   "--mode=int8", "--int8_io", f"--output={out}", "--check_examples=16", "--representative_steps=16")
    assert r.returncode == 0, r.stderr[-3000:]
    # the calibrator's "fully_quantize: 0, inference_type: 6, …" and LiteRT's "Created TensorFlow Lite XNNPACK
    # delegate" lines stay out of the user's terminal (common.quiet_tf)
    assert "fully_quantize" not in r.stderr and "XNNPACK" not in r.stderr, r.stderr
    return out, json.loads((tmp_path / "m.tflite.json").read_text())


@pytest.mark.slow
def test_int8_input_quantization_is_the_normalisation(tmp_path):
    """One integral mean/std (EfficientNet-Lite's 127/128) and --int8_io: the file's int8 input means
    (pixel − 127) / 128, so callers feed ``pixel − 128`` and the graph has no normalisation op or pad at all."""


    from export import litert
    from export.fold import int8_input_quantization
    from models.weights import assign
    d = tiny_spec_dict(name="lite_like")
    d["input"] = {"size": 32, "mean": [127.0] * 3, "std": [128.0] * 3}
    spec = S.decode(d)
    assert int8_input_quantization(spec) == (1 / 128, -1)
    assert int8_input_quantization(_spec()) is None  # mean 127.5: no integral zero point
    assert int8_input_quantization(_spec(inp=IMAGENET)) is None  # per-channel statistics
    model = build(spec)
    assign(model, randomized_weights(model, seed=3))
    out, report = _export_int8_io(tmp_path, d, model)
    inp = report["io"]["input"]
    assert inp["dtype"] == "int8" and inp["quantization"] == {"scale": 1 / 128, "zero_point": -1}, inp
    assert "PADV2" not in report["ops"] and report["metadata"]["input"].startswith("int8 pixel − 128")
    # int8 of random weights vs the Keras model on raw pixels: as close as the other int8 exports
    assert report["parity"]["relative_max_abs_diff"] <= 0.25 and report["parity"]["top1_agreement"] >= 0.75
    it = litert.interpreter(str(out))
    x = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    direct = []
    for img in x:  # the documented contract: int8 = pixel − 128
        it.set_tensor(it.get_input_details()[0]["index"], (img[None] - 128).astype(np.int8))
        it.invoke()
        direct.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    via_quantize = litert.predict(it, ((x - 127.0) / 128.0).astype(np.float32))
    np.testing.assert_allclose(litert.dequantize(np.stack(direct), it.get_output_details()[0]), via_quantize,
                               atol=1e-6)


@pytest.mark.slow
def test_black_border_deploys_with_no_added_op(tmp_path):
    """A black-border spec with per-channel (ImageNet) statistics: the folded float file has exactly the ops of
    the graph without normalisation, and ``--int8_io`` gives an int8 input of ``pixel − 128`` (scale 1, zero point
    −128) into the folded graph — raw pixels, no PAD, no MUL, exact borders."""
    from export import litert
    from export.fold import int8_input_quantization
    from models.weights import assign
    spec = _spec(inp=IMAGENET, border="black")
    assert int8_input_quantization(spec) == (1.0, -128)
    model = build(spec)
    assign(model, randomized_weights(model, seed=5))
    plain = build(_spec(inp=IMAGENET), include_preprocessing=False)
    litert.export(fold_preprocessing(model, spec, 32), str(tmp_path / "fold.tflite"), "float32")
    litert.export(plain, str(tmp_path / "none.tflite"), "float32")
    assert litert.op_counts(str(tmp_path / "fold.tflite")) == litert.op_counts(str(tmp_path / "none.tflite"))
    _, report = _export_int8_io(tmp_path, S.encode(spec), model)
    assert report["io"]["input"]["quantization"] == {"scale": 1.0, "zero_point": -128}, report["io"]
    assert "PAD" not in report["ops"] and "PADV2" not in report["ops"]
    assert report["parity"]["relative_max_abs_diff"] <= 0.25 and report["parity"]["top1_agreement"] >= 0.75


def test_fold_black_of_a_mean_border_model_is_its_black_border_twin():
    """``--preprocessing=fold_black`` on a model trained with the mean border: exactly the same weights in the
    black-border graph (the approximation is the border alone; inside the image it is the exact model)."""
    from export.fold import deploy_spec
    from models.weights import assign
    spec = _spec(inp=IMAGENET)
    assert deploy_spec(spec, "fold") is spec and deploy_spec(spec, "fold_black").input.border == "black"
    black = deploy_spec(spec, "fold_black")
    assert deploy_spec(black, "fold_black") is black
    model = build(spec)
    assign(model, randomized_weights(model, seed=7))
    twin = build(black)
    assign(twin, named_weights(model))
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    folded = fold_preprocessing(model, black, 32)
    ref = np.asarray(twin(x, training=False))
    assert np.abs(np.asarray(folded(x, training=False)) - ref).max() <= 1e-4 * np.abs(ref).max()
    # the mean border differs from the black one only where the stem sees padding: not a no-op
    assert np.abs(np.asarray(model(x, training=False)) - ref).max() > 1e-3 * np.abs(ref).max()


@pytest.mark.slow
def test_export_fold_black_adds_no_op_and_reports_its_cost(tmp_path):
    import json

    from conftest import run_module

    from export import litert
    from models.weights import assign, save_npz
    spec = _spec(inp=IMAGENET)
    model = build(spec)
    assign(model, randomized_weights(model, seed=8))
    (tmp_path / "s.json").write_text(json.dumps(S.encode(spec)))
    save_npz(model, str(tmp_path / "w.npz"))
    out = tmp_path / "m.tflite"
    r = run_module("recipes.export_tflite", f"--model={tmp_path / 's.json'}", f"--weights={tmp_path / 'w.npz'}",
                   "--preprocessing=fold_black", f"--output={out}", "--check_examples=16")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "m.tflite.json").read_text())
    plain = tmp_path / "none.tflite"
    litert.export(build(spec, include_preprocessing=False), str(plain), "float32")
    assert report["op_counts"] == litert.op_counts(str(plain))  # no PAD, no ADD, no MUL before the stem
    assert report["metadata"]["preprocessing"] == "fold_black"
    # against the exact (mean-border) Keras model: the border's cost, measured, not zero
    assert report["parity"]["max_abs_diff"] > 0 and 0 <= report["parity"]["top1_agreement"] <= 1
