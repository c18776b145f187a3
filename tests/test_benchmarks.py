"""Benchmarks run end to end on tiny settings and honour the command-line contract (one stderr line, exit 2)."""
import json
import math
import os

import pytest
from conftest import error_line, run_module


@pytest.mark.slow
def test_supernet_cost_quick(tmp_path):
    out = tmp_path / "x.json"
    r = run_module("benchmarks.supernet_cost", "--quick", f"--out={out}", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report) == {"N", "host", "method", "targets", "command"}
    assert report["command"] == "python -m benchmarks.supernet_cost --out benchmarks/results/supernet_cost.json"
    assert list(report["N"]) == ["3"] and isinstance(report["method"], str) and len(report["method"]) > 200
    assert report["host"]["cpu_count"] >= 1 and report["host"]["tensorflow"]
    row = report["N"]["3"]
    for key in ("meta_over_fixed_time", "meta_over_fixed_mem", "multi_over_meta_time", "multi_over_meta_mem"):
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert set(row["modes"]) == {"fixed", "meta", "multi"}
    for mode in row["modes"].values():
        assert mode["step_ms"] > 0 and mode["alloc_peak_mib"] > 0
    # N separate depthwise kernels per layer vs one k_max meta kernel (the same as the fixed net's)
    assert row["modes"]["multi"]["weight_params"] > row["modes"]["meta"]["weight_params"] == \
        row["modes"]["fixed"]["weight_params"]
    assert row["modes"]["fixed"]["arch_params"] == 0 < row["modes"]["meta"]["arch_params"]
    settings = report["host"]["run"]["settings"]
    assert settings["quick"] and settings["steps"] == 2 and settings["width"] == 0.25
    assert [len(r["step_s"]) for r in row["modes"]["meta"]["raw_per_round"]] == [2]
    assert (tmp_path / "x.png").stat().st_size > 1000
    assert not [p for p in os.listdir(tmp_path) if p not in ("x.json", "x.png")]  # no temp files left behind


@pytest.mark.parametrize("args, needle", [
    (("--rounds=0",), "--rounds"),
    (("--ns=3,x",), "--ns"),
    (("--width=-1",), "--width"),
    (("--no_such_flag=1",), "no_such_flag"),
])
def test_supernet_cost_bad_flags(args, needle, tmp_path):
    out = tmp_path / "x.json"
    r = run_module("benchmarks.supernet_cost", f"--out={out}", *args, timeout=120)
    assert needle in error_line(r, "benchmarks.supernet_cost"), r.stderr
    assert not out.exists()


def test_supernet_cost_needs_out():
    r = run_module("benchmarks.supernet_cost", "--quick", timeout=120)
    assert "out" in error_line(r, "benchmarks.supernet_cost"), r.stderr


def test_quantization_benchmark_refuses_bad_flags(tmp_path):
    for args in ([], [f"--out={tmp_path / 'q.json'}", "--dataset=folder:/nonexistent"]):
        error_line(run_module("benchmarks.quantization", *args, timeout=120), "benchmarks.quantization")
    assert not (tmp_path / "q.json").exists()
