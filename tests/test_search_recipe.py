"""recipes.search_metakernel end to end on the synthetic set: moves toward its target, resumes after a kill, and
refuses bad input with one line and exit status 2."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from models.spec import loads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 600_000
TINY = ["--dataset=shapes", "--width=0.25", f"--target_macs={TARGET}", "--batch_size=16", "--limit=320",
        "--val_limit=64", "--steps_per_epoch=6", "--a_lr=0.05", "--noprogress"]


def search(*args, wait=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "recipes.search_metakernel", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def describe(path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "zoo", "describe", str(path), "--json"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_tiny_search_moves_toward_target_and_writes_everything(tmp_path):
    out = tmp_path / "run"
    r = search(*TINY, "--epochs=3", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # E[MACs] starts (uniform α) well above the target and the cost loss pulls it down
    assert summary["initial_expected_macs"] > 1.3 * TARGET
    assert abs(summary["expected_macs"] - TARGET) < abs(summary["initial_expected_macs"] - TARGET)
    spec = loads((out / "derived.json").read_text(), "derived.json")
    assert spec.provenance.method == "metakernel" and spec.provenance.target_macs == TARGET
    assert spec.provenance.seed == 0 and spec.provenance.data == "shapes"
    metrics = dict(spec.provenance.metrics)
    assert {"expected_macs", "argmax_macs", "macs", "params"} <= set(metrics)
    macs = describe(out / "derived.json")["macs"]
    assert macs == metrics["macs"] and abs(macs / TARGET - 1) <= 0.03
    for f in ("kernel_distribution.png", "alpha_trajectories.png", "derived_init.npz", "history.json"):
        assert (out / f).stat().st_size > 0, f
    assert any((out / "tensorboard").iterdir())
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["tau"] < history[0]["tau"]


def test_search_resumes_after_a_kill(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--epochs=3", "--steps_per_epoch=10", f"--out_dir={out}"]
    proc = search(*args, wait=False)
    ckpt = out / "checkpoints" / "checkpoint"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the search finished before it could be killed: " + proc.stderr.read()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "derived.json").exists()
    r = search(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from epoch" in r.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["resumed"] is True


@pytest.mark.parametrize("args,needle", [
    ([], "--target_macs"),
    (["--target_macs=1e6", "--candidates=3,4"], "--candidates"),
    (["--target_macs=1e6", "--dataset=folder:/nonexistent/dir"], "/nonexistent/dir"),
    (["--target_macs=1e6", "--tau_start=0.5", "--tau_end=2"], "--tau_end"),
    (["--target_macs=1e12", "--width=0.25", "--epochs=1"], "outside what the space can reach"),
    (["--target_macs=1e6", "--epochs=zero"], "epochs"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    r = search(*args, f"--out_dir={tmp_path / 'o'}", "--noprogress")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip() and "cuInit" not in line and "absl" not in line
             and "cuda" not in line and "cpu_feature" not in line and "AVX" not in line]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "o" / "derived.json").exists()


def test_changed_settings_refuse_to_resume(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "search_settings.json").write_text(json.dumps({"epochs": 99}))
    r = search("--target_macs=1e6", f"--out_dir={out}", "--noprogress")
    assert r.returncode == 2 and "other settings" in r.stderr


def test_search_runs_mirrored_on_two_logical_cpus(tmp_path):
    out = tmp_path / "run"
    r = search(*TINY, "--epochs=1", "--strategy=mirrored", "--cpu_replicas=2", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["train_ce"] == history[0]["train_ce"]  # finite, not NaN
    assert loads((out / "derived.json").read_text(), "derived.json").provenance.target_macs == TARGET
