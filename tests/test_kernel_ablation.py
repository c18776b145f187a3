"""benchmarks.kernel_ablation end to end on tiny settings (its own file so that pytest-xdist's per-file scheduling
runs it beside the other benchmark tests)."""
import json

import pytest
from conftest import run_module


@pytest.mark.slow
def test_kernel_ablation_runs_every_stage_and_resumes(tmp_path):
    """Tiny end-to-end run: matched baselines, trainings, latency, JSON + plot; a rerun skips all. (The searched group
    runs the same search-then-train stages as benchmarks.metakernel_zoo, whose test covers them.)"""
    out, work = tmp_path / "ka.json", tmp_path / "work"
    args = ["--groups=A,B,C", "--a_kernels=3", "--sets=2", "--seeds=0", "--dataset=shapes", "--epochs=2",
            "--train_limit=64", "--batch_size=32", "--search_limit=64", "--search_epochs=2", "--latency_rounds=1",
            "--search_flags=--steps_per_epoch=2,--val_limit=32,--batch_size=16", f"--work_dir={work}", f"--out={out}"]
    r = run_module("benchmarks.kernel_ablation", *args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    models = report["models"]
    assert set(models) == {"A_k3", "B_k3-5", "C_k3-5"}
    # two sizes: the exponential split is the uniform one (1/2, 1/2), so C reuses B's training instead of repeating it
    assert models["C_k3-5"]["identical_to"] == "B_k3-5"
    assert models["C_k3-5"]["top1_per_seed"] == models["B_k3-5"]["top1_per_seed"]
    assert not any("C_k3-5" in stage for stage in report["stage_seconds"])
    target = report["setup"]["target_macs"]
    for name in ("A_k3", "C_k3-5"):
        assert abs(models[name]["macs"] / target - 1) <= 0.02
        assert len(models[name]["top1_per_seed"]) == 1 and models[name]["latency_ms"]["median_ms"] > 0
    assert models["C_k3-5"]["kernels"] == [3, 5] and models["C_k3-5"]["partition"] == "exponential"
    assert (tmp_path / "ka.png").stat().st_size > 0
    r = run_module("benchmarks.kernel_ablation", *args, timeout=300)  # everything on disk: nothing reruns
    assert r.returncode == 0, r.stderr[-3000:]
    rerun = json.loads(out.read_text())
    assert rerun["stages_run_now"] == [] and set(rerun["stage_seconds"]) == set(report["stage_seconds"])
