"""recipes.qat: tf_keras twin parity, tfmot QAT fine-tuning and int8 TFLite export on a small 32×32 spec."""
import json
import os

import numpy as np
import pytest
from conftest import error_line, python_json, randomized_weights, run_module, write_spec

# QAT-friendly: relu6, mixed kernels in the branch form (CONCATENATION), one residual (ADD), and a plain conv block
# with PReLU and tanh branches and an average pool (FGNAS's derived layers).
SPEC = {"schema_version": 1, "name": "tiny_qat", "family": "mbconv",
        "input": {"size": 32, "mean": [127.5] * 3, "std": [127.5] * 3},
        "stem": {"filters": 8, "kernel": 3, "stride": 2, "act": "relu6"},
        "stages": [[{"block": "ir", "kernels": [3, 5], "split": [8, 8], "expand_channels": 16, "filters": 8,
                     "stride": 1, "act": "relu6"},
                    {"block": "ir", "kernels": [3, 5], "split": [16, 8], "expand_channels": 24, "filters": 16,
                     "stride": 2, "act": "relu6"}],
                   [{"block": "conv", "kernels": [1, 3], "split": [8, 8], "acts": ["prelu", "tanh"], "filters": 16,
                     "stride": 1, "act": "relu", "pool": "avg"}]],
        "head": {"filters": 32, "act": "relu6", "dropout": 0.1, "classes": 10}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The spec file and a randomized weights file for it."""
    import keras

    from models import spec as S
    from models.builder import build
    from models.weights import assign, save_npz
    d = tmp_path_factory.mktemp("qat")
    spec_path = write_spec(d, SPEC)
    model = build(S.decode(SPEC), keras)
    # logits ~2 (kernels ×3 gives ~35, where float32 rounding alone nears 1e-5)
    assign(model, randomized_weights(model, shift_std=0.2, kernel_scale=1.5))
    save_npz(model, str(d / "init.npz"))
    return spec_path, d / "init.npz"


@pytest.mark.slow
def test_qat_end_to_end(tiny, tmp_path):
    spec, init = tiny
    out = tmp_path / "out"
    r = run_module("recipes.qat", f"--model={spec}", f"--weights={init}", "--dataset=shapes", "--limit=128",
                   "--val_limit=64", "--epochs=1", "--batch_size=32", f"--out_dir={out}", "--noprogress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote" in r.stdout
    assert "Warning" not in r.stderr, r.stderr[-3000:]  # e.g. the converter's "Statistics for quantized inputs…"
    report = json.loads((out / "qat_report.json").read_text())
    for key in ("twin_max_abs_diff", "qat_top1", "int8_top1", "float_top1", "file_bytes", "ops", "op_counts",
                "float_ops", "quantize_configs", "epochs", "steps", "steps_per_epoch", "settings", "versions",
                "history", "int8_vs_qat", "input_dtype"):
        assert key in report, key
    assert report["twin_check"]["max_abs_logit"] > 0.5  # randomized weights: the parity check is not vacuous
    assert report["twin_max_abs_diff"] <= 1e-5
    tflite = out / "model_int8_qat.tflite"
    assert tflite.exists() and tflite.stat().st_size == report["file_bytes"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "CONCATENATION", "ADD", "PRELU", "TANH", "AVERAGE_POOL_2D"} <= set(
        report["ops"])
    assert report["input_dtype"] == "float32" and report["output_dtype"] == "float32"
    # --preprocessing=fold (default): mean/std live in the stem conv, the border pad (one mean: one PADV2) keeps the
    # input's quantization, and every op is int8; the pad and the PReLU (no-op config: LiteRT quantizes PRELU
    # itself) are the only layers that needed an explicit config.
    assert report["preprocessing"] == "fold"
    assert report["quantize_configs"] == {"output_only": ["stem_border_pad"], "noop": ["s1_b0_g0_act"]}
    assert report["float_ops"] == [] and report["op_counts"]["PADV2"] == 1 and "MUL" not in report["ops"]
    for key in ("float_top1", "qat_top1_before_finetune", "qat_top1", "int8_top1"):
        assert 0.0 <= report[key] <= 1.0
    assert report["epochs"] == 1 and report["steps_per_epoch"] == 4 and report["steps"] == 4
    assert len(report["history"]) == 1 and "val_top1" in report["history"][0]
    parity = report["int8_vs_qat"]
    assert parity["max_abs_diff"] <= 0.2 * parity["max_abs_qat_logit"], parity
    assert parity["top1_agreement"] >= 0.5, parity
    assert report["versions"]["tensorflow-model-optimization"] == "0.8.1"

    # The fine-tuned float weights, unfolded back to the zoo form, load into the Keras 3 model (with its preprocess
    # layer) by name and agree with the int8 file on raw pixels (a wrong unfold of the stem would not).
    from export import litert
    from models import spec as S
    from models.builder import build
    model = build(S.decode(SPEC), weights=str(out / "weights.npz"))
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    got = litert.predict(litert.interpreter(str(tflite)), x)
    assert np.abs(got - ref).max() <= 0.2 * np.abs(ref).max(), (np.abs(got - ref).max(), np.abs(ref).max())
    assert not [f for f in os.listdir(out) if f.startswith("tmp") or f.endswith(".partial.npz")]


@pytest.mark.slow
def test_twin_matches_keras3_efficientnet_lite0():
    """The tf_keras twin built by the recipe equals the Keras 3 model (ImageNet weights, 64×64)."""
    res = python_json(
        "import json, numpy as np, zoo\n"
        "from training.qat import build_pair, max_abs_diff\n"
        "spec = zoo.get_spec('efficientnet_lite0')\n"
        "m, twin = build_pair(spec, 64, None, zoo.weights_path('efficientnet_lite0', 'imagenet'))\n"
        "x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)\n"
        "d, s = max_abs_diff(m, twin, x)\n"
        "print(json.dumps({'diff': d, 'scale': s, 'twin': type(twin).__module__}))\n")
    assert res["twin"].startswith("tf_keras")
    assert res["scale"] > 1.0
    assert res["diff"] <= 1e-4, res


@pytest.mark.parametrize("args, needle", [
    (("--model=not_a_model",), "unknown model"),
    (("--no_such_flag=1",), "no_such_flag"),
    (("--epochs=-1",), "epochs"),
    (("--weights=/nonexistent/w.npz",), "no such file"),
    (("--dataset=folder:/nonexistent/data",), "no such directory"),
    (("--classes=4",), "--classes=10"),
    (("--input_size=4",), "input_size"),
    (("--output=model.bin",), ".tflite"),
    (("extra_argument",), "unexpected"),
])
def test_bad_input(args, needle, tiny, tmp_path):
    spec, _ = tiny
    out = tmp_path / "out"
    r = run_module("recipes.qat", f"--model={spec}", f"--out_dir={out}", *args)
    assert needle in error_line(r, "recipes.qat"), r.stderr
    assert not out.exists()


def test_bad_weights_classes(tiny, tmp_path):
    """A weights file trained on another class count is refused with the --classes to pass."""
    spec, _ = tiny
    bad = tmp_path / "w.npz"
    np.savez(bad, **{"classifier/kernel": np.zeros((32, 4), np.float32)})
    r = run_module("recipes.qat", f"--model={spec}", f"--weights={bad}", f"--out_dir={tmp_path / 'out'}")
    assert "pass --classes=4" in error_line(r, "recipes.qat"), r.stderr
