"""The demo recipe runs end to end on a tiny spec; bad flags and files give one line and exit status 2."""
import json

import pytest
from conftest import error_line, run_module

TINY = {"schema_version": 1, "name": "tiny_demo", "family": "mbconv",
        "input": {"size": 32, "mean": [127.5] * 3, "std": [127.5] * 3},
        "stem": {"filters": 8, "kernel": 3, "stride": 2, "act": "relu"},
        "stages": [[{"block": "ir", "kernels": [3, 5], "split": [8, 8], "expand_channels": 16, "filters": 8,
                     "stride": 2, "act": "hswish", "se_channels": 4}]],
        "head": {"filters": 16, "act": "relu", "dropout": 0.1, "classes": 4}}


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    r = run_module("recipes.demo", f"--model={spec}", "--weights=", f"--out_dir={out}", "--runs=5")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tflite_vs_keras_max_abs_diff"] <= 1e-4
    assert summary["latency_ms"]["runs"] == 5 and summary["latency_ms"]["median"] > 0
    assert (out / "predictions.png").stat().st_size > 1000 and (out / "tiny_demo.tflite").exists()


@pytest.mark.parametrize("args, needle", [
    (("--runs=0",), "--runs"),
    (("--no_such_flag=1",), "no_such_flag"),
    (("--model=not_a_model",), "unknown model"),
    (("--images=/nonexistent/x.jpg",), "no such file"),
])
def test_demo_bad_input(args, needle, tmp_path):
    r = run_module("recipes.demo", *args, f"--out_dir={tmp_path}")
    assert needle in error_line(r, "recipes.demo"), r.stderr
