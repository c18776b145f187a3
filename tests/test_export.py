"""recipes.export_tflite (four modes, LiteRT parity, ops) and recipes.benchmark_latency on a small 32×32 spec."""
import json
import os

import numpy as np
import pytest
from conftest import error_line, randomized_weights, run_module, write_spec

# Small, but weight-heavy enough (≈0.4M params, most of them in wide 1×1 convs and the classifier) that int8 storage
# dominates the flatbuffer's per-channel quantization parameters: int8 ≥ 3× smaller than float32.
SPEC = {"schema_version": 1, "name": "tiny_export", "family": "mbconv",
        "input": {"size": 32, "mean": [127.5] * 3, "std": [127.5] * 3},
        "stem": {"filters": 16, "kernel": 3, "stride": 2, "act": "relu"},
        "stages": [[{"block": "ir", "kernels": [3, 5], "split": [24, 24], "expand_channels": 48, "filters": 24,
                     "stride": 2, "act": "hswish", "se_channels": 8}],
                   [{"block": "ir", "kernels": [3], "expand_channels": 384, "filters": 192, "stride": 2,
                     "act": "relu"}]],
        "head": {"filters": 768, "act": "relu", "dropout": 0.1, "classes": 200}}
MODES = ("float32", "float16", "dynamic", "int8")
CHECK = 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(spec path, weights .npz path) in a module temp dir."""
    import zoo
    from models.weights import assign, save_npz
    d = tmp_path_factory.mktemp("tiny")
    spec = write_spec(d, SPEC)
    model = zoo.build(str(spec))
    assign(model, randomized_weights(model))
    save_npz(model, str(d / "tiny.npz"))
    return spec, d / "tiny.npz"


@pytest.fixture(scope="module")
def exports(tiny, tmp_path_factory):
    """{mode: (tflite path, report dict)} from the CLI, one run per mode."""
    spec, weights = tiny
    out = tmp_path_factory.mktemp("export")
    results = {}
    for mode in MODES:
        path = out / f"tiny-{mode}.tflite"
        r = run_module("recipes.export_tflite", f"--model={spec}", f"--weights={weights}", f"--mode={mode}",
                       f"--output={path}", f"--check_examples={CHECK}", "--representative_steps=16")
        assert r.returncode == 0, r.stderr[-3000:]
        assert "top-1 agreement" in r.stdout and mode in r.stdout
        # int8: which data calibrated it, and that the default set is synthetic, in the output and the report
        assert ("int8 calibration" in r.stdout and "16 images of shapes" in r.stdout
                and "synthetic" in r.stdout) is (mode == "int8"), r.stdout
        results[mode] = (path, json.loads((out / f"tiny-{mode}.tflite.json").read_text()))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_export_mode(exports, mode):
    path, report = exports[mode]
    assert report["mode"] == mode and report["file_bytes"] == path.stat().st_size
    # raw pixels in, the normalisation folded into the stem: no per-pixel MUL before the first conv
    assert report["preprocessing"] == "fold" and report["metadata"]["input"].startswith("RGB pixels 0–255")
    from export import litert
    assert litert.read_metadata(str(path)) == report["metadata"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(report["ops"])
    assert report["ops"] == sorted(report["ops"]) and set(report["op_counts"]) == set(report["ops"])
    assert report["input_dtype"] == report["output_dtype"] == "float32"
    assert report["io"]["input"]["shape"] == [1, 32, 32, 3] and report["io"]["output"]["shape"] == [1, 200]
    assert set(report["versions"]) == {"keras", "tensorflow", "ai-edge-litert"}
    p = report["parity"]
    assert p["examples"] == CHECK and p["dataset"] == "shapes" and 0.0 <= p["top1_agreement"] <= 1.0
    assert p["max_abs_keras_logit"] > 0.1, "logits too small for a meaningful parity check"
    assert p["accuracy"] is None  # 200 classifier outputs vs the 10 shapes classes
    if mode == "float32":
        assert p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0
        assert "DEQUANTIZE" not in report["ops"]
    elif mode == "float16":
        assert p["relative_max_abs_diff"] <= 1e-2
        assert "DEQUANTIZE" in report["ops"]  # float16 weights → float32 at load
    elif mode == "dynamic":
        assert p["relative_max_abs_diff"] <= 0.1
        assert "QUANTIZE" not in report["ops"]
    else:
        assert report["representative"] == {"dataset": "shapes", "split": "train", "steps": 16, "images": 16,
                                            "synthetic": True}
        assert set(report["ops"]) & {"QUANTIZE", "DEQUANTIZE"}  # float32 I/O around int8 internals
        assert report["int8_io"] is False and p["relative_max_abs_diff"] <= 0.25


@pytest.mark.slow
def test_export_sizes(exports):
    size = {m: exports[m][1]["file_bytes"] for m in MODES}
    assert size["int8"] * 3 <= size["float32"], size
    assert size["dynamic"] * 3 <= size["float32"], size
    assert size["float16"] * 1.8 <= size["float32"], size


@pytest.mark.slow
def test_int8_io_in_process(tiny, tmp_path):
    """Full-integer export with int8 input/output: the helpers quantize the input and dequantize the output."""
    import zoo
    from export import litert
    from inputs import classification as data
    spec, weights = tiny
    model = zoo.build(str(spec), weights=str(weights))
    calib = data.shapes("train", 32)[0][:16].astype(np.float32)
    path = tmp_path / "io.tflite"
    litert.export(model, str(path), "int8", lambda: ([x[None]] for x in calib), int8_io=True)
    it = litert.interpreter(str(path))
    io = litert.io_details(it)
    assert io["input"]["dtype"] == io["output"]["dtype"] == "int8"
    assert io["input"]["quantization"]["scale"] > 0
    assert "QUANTIZE" not in litert.op_counts(str(path))
    images = data.shapes("test", 32)[0][:8].astype(np.float32)
    ref, got = model.predict(images, verbose=0), litert.predict(it, images)
    assert np.abs(got - ref).max() <= 0.25 * np.abs(ref).max()


@pytest.mark.slow
def test_latency_tflite(exports, tmp_path):
    path, _ = exports["float32"]
    out = tmp_path / "lat" / "float32.json"
    r = run_module("recipes.benchmark_latency", f"--model={path}", "--runs=20", "--warmup=5", f"--json={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["p10_ms"] <= res["median_ms"] <= res["p90_ms"] and res["min_ms"] > 0
    assert res["runs"] == len(res["times_ms"]) == 20 and res["warmup"] == 5 and res["threads"] == 1
    assert res["file_bytes"] == path.stat().st_size and res["input_shape"] == [1, 32, 32, 3]
    assert res["input_dtype"] == "float32" and res["litert_version"]
    assert {"platform", "cpu_model", "cores"} <= set(res["host"])
    assert "median" in r.stdout
    # both clocks: wall (the *_ms fields) and the calling thread's CPU time (the latency tables' clock)
    cpu = res["thread_cpu"]
    assert cpu["n"] == 20 and 0 < cpu["p10_ms"] <= cpu["median_ms"] <= cpu["p90_ms"]
    assert "thread_time_ns" in cpu["clock"]
    assert cpu["median_ms"] <= 1.5 * res["median_ms"]  # one thread: its CPU time cannot exceed the wall time much
    assert "wall" in res["clock"] and "cpu " in r.stdout


@pytest.mark.slow
def test_latency_spec_path(tiny, tmp_path):
    """A spec path is exported float32 to a temporary file first (removed afterwards)."""
    spec, _ = tiny
    out = tmp_path / "spec.json"
    r = run_module("recipes.benchmark_latency", f"--model={spec}", "--runs=10", "--warmup=2", "--threads=2",
                   f"--json={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["exported_from"]["zoo_model"] == "tiny_export" and res["exported_from"]["mode"] == "float32"
    assert res["threads"] == 2 and res["p10_ms"] <= res["median_ms"] <= res["p90_ms"]
    assert sorted(os.listdir(tmp_path)) == ["spec.json"]


@pytest.fixture()
def junk(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.tflite").write_bytes(b"not a flatbuffer at all")
    (tmp_path / "dir.tflite").mkdir()
    (tmp_path / "bad.npz").write_text("not a zip")
    return tmp_path


@pytest.mark.parametrize("args, needle", [
    (("--mode=int4",), "--mode"),
    (("--model=not_a_model",), "unknown model"),
    (("--weights=/nonexistent/w.npz",), "no such file"),
    (("--weights=imagenet",), "no weights 'imagenet'"),
    (("--weights={d}/bad.npz",), "not an .npz weights archive"),
    (("--weights={w}", "--classes=10"), "pass --classes=200"),
    (("--output={d}/model.onnx",), "must end with .tflite"),
    (("--output={d}/notes.txt/model.tflite",), "not a directory"),
    (("--output={d}/dir.tflite",), "is a directory"),
    (("--int8_io",), "--int8_io needs --mode=int8"),
    (("--dataset=folder:/nonexistent",), "no such directory"),
    (("--input_size=4",), "--input_size"),
    (("--classes=0",), "--classes"),
    (("--representative_steps=0",), "--representative_steps"),
    (("extra",), "unexpected arguments"),
])
def test_export_bad_input(tiny, junk, args, needle):
    spec, weights = tiny
    before = sorted(os.listdir(junk))
    args = [a.format(d=junk, w=weights) for a in args]
    r = run_module("recipes.export_tflite", f"--model={spec}", "--weights=", f"--out_dir={junk}", *args)
    assert needle in error_line(r, "recipes.export_tflite"), r.stderr
    assert sorted(os.listdir(junk)) == before


def test_export_needs_model(junk):
    r = run_module("recipes.export_tflite", f"--out_dir={junk}")
    assert "--model" in error_line(r, "recipes.export_tflite"), r.stderr


@pytest.mark.parametrize("args, needle", [
    (("--model={f32}", "--runs=0"), "--runs"),
    (("--model={f32}", "--threads=0"), "--threads"),
    (("--model={d}/missing.tflite",), "no such file"),
    (("--model={d}/fake.tflite",), "not a TFLite flatbuffer"),
    (("--model={d}/dir.tflite",), "not a file"),
    (("--model={d}/notes.txt",), "neither a .tflite file nor a spec .json"),
    (("--model=not_a_model",), "unknown model"),
    (("--model={f32}", "--json={d}/notes.txt/x.json"), "not a directory"),
    (("--model={f32}", "--input_size=64"), "fixed input size of 32×32"),
    (("--model={f32}", "extra"), "unexpected arguments"),
])
@pytest.mark.slow
def test_latency_bad_input(exports, junk, args, needle):
    before = sorted(os.listdir(junk))
    args = [a.format(d=junk, f32=exports["float32"][0]) for a in args]
    if not any("--json" in a for a in args):
        args.append(f"--json={junk}/out.json")
    r = run_module("recipes.benchmark_latency", *args)
    assert needle in error_line(r, "recipes.benchmark_latency"), r.stderr
    assert sorted(os.listdir(junk)) == before


def test_parity_scores_accuracy_only_on_the_weights_own_classes(monkeypatch):
    """Same class count, other classes (cifar10 weights checked on shapes): no accuracy, a note saying why."""
    from types import SimpleNamespace

    from export import litert
    from workflows import export_tflite as E
    logits = np.eye(3, dtype=np.float32)
    model = SimpleNamespace(predict=lambda x, **kwargs: logits)
    monkeypatch.setattr(litert, "predict", lambda it, x: logits)
    config = SimpleNamespace(dataset="shapes", check_split="test")
    info = SimpleNamespace(num_classes=3, class_names=("circle", "square", "triangle"))
    check = (np.zeros((3, 4, 4, 3), np.float32), np.array([0, 1, 2]), info)
    other = E._parity(config, model, None, check, 3, lambda x: x, ["cat", "dog", "frog"])
    assert other["accuracy"] is None and other["accuracy_note"].startswith("not scored")
    same = E._parity(config, model, None, check, 3, lambda x: x, ["circle", "square", "triangle"])
    assert same["accuracy"] == {"keras": 1.0, "litert": 1.0} and "accuracy_note" not in same
    assert E._parity(config, model, None, check, 3, lambda x: x)["accuracy"] == {"keras": 1.0, "litert": 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_convert_equals_keras_export(tiny, tmp_path, mode):
    """`litert.convert` (the frozen function, no SavedModel round trip) converts what Keras' own
    ``model.export(format="litert")`` does: the same operators, input signature and outputs."""
    import zoo
    from export import litert
    from models.weights import assign, read_npz
    spec, weights = tiny
    model = zoo.build(str(spec))
    assign(model, read_npz(str(weights)))
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    options = litert.converter_options(mode, (lambda: ([im[None]] for im in x)) if mode == "int8" else None)
    ours = tmp_path / "ours.tflite"
    ours.write_bytes(litert.convert(model, options))
    keras_file = tmp_path / "keras.tflite"
    model.export(str(keras_file), format="litert", verbose=False, **options)
    assert litert.op_counts(str(ours)) == litert.op_counts(str(keras_file))
    assert [(i["shape"], i["shape_signature"]) for i in litert.input_shapes(str(ours))] == \
        [(i["shape"], i["shape_signature"]) for i in litert.input_shapes(str(keras_file))]
    a = litert.predict(litert.interpreter(str(ours)), x)
    b = litert.predict(litert.interpreter(str(keras_file)), x)
    assert np.abs(a - b).max() <= (1e-5 if mode == "float32" else 0.0) * max(1.0, np.abs(b).max())
