"""recipes.pipeline (make demo) end to end at toy size: every stage runs, the summary and plot are written, a rerun
skips finished stages, bad data is one line and exit 2."""
import json
import os

import pytest
from conftest import error_line, run_module

TOY = ["--width=0.25", "--target_macs=6e5", "--search_epochs=1", "--train_epochs=2", "--steps_per_epoch=4",
       "--batch_size=16", "--limit=128", "--eval_examples=32", "--runs=10"]


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    r = run_module("recipes.pipeline", *TOY, f"--out_dir={out}", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["search"]["macs_vs_target"]) <= 0.03
    for mode in ("float32", "int8"):
        m = summary["models"][mode]
        assert os.path.getsize(m["tflite"]) == m["bytes"] and 0 <= m["top1"] <= 1
        assert m["latency"]["p10_ms"] <= m["latency"]["median_ms"] <= m["latency"]["p90_ms"]
    # float32 parity relative to the logit scale: a toy retraining of 8 steps can leave BN moving statistics far
    # from the weights and the logits large, where an absolute bound measures float32 rounding, not the export
    assert summary["models"]["float32"]["relative_max_abs_diff"] < 1e-5
    assert (out / "pipeline.png").stat().st_size > 0
    assert "TFLite int8" in r.stdout and set(summary["commands"]) == set(summary["stage_seconds"])
    again = run_module("recipes.pipeline", *TOY, f"--out_dir={out}", timeout=900)
    assert again.returncode == 0 and again.stdout.count("done already") == 6


def test_pipeline_bad_data_is_one_line_exit_2(tmp_path):
    r = run_module("recipes.pipeline", "--dataset=folder:/nonexistent", f"--out_dir={tmp_path / 'o'}", timeout=900)
    assert "/nonexistent" in error_line(r, "recipes.pipeline"), r.stderr
