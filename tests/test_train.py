"""recipes.train and recipes.evaluate end to end on a tiny spec and the synthetic `shapes` data.

Covers: outputs and model card (sha256 of the file, settings, metrics), learning (loss falls, accuracy beats chance),
evaluate reproducing the card's validation top-1, MirroredStrategy on two logical CPUs, kill -9 and resume by
rerunning the same command, initial weights with another class count (classifier skipped), and bad input (one line,
exit status 2, nothing written).
"""
import glob
import hashlib
import json
import os
import signal
import time

import numpy as np
import pytest
from conftest import error_line, run_module, write_spec, write_tiny_png

TINY = {"schema_version": 1, "name": "tiny_train", "family": "mbconv",
        "input": {"size": 32, "mean": [127.5] * 3, "std": [127.5] * 3},
        "stem": {"filters": 16, "kernel": 3, "stride": 2, "act": "relu"},
        "stages": [[{"block": "ir", "kernels": [3, 5], "split": [16, 16], "expand_channels": 32, "filters": 16,
                     "stride": 2, "act": "relu", "se_channels": 4}],
                   [{"block": "ir", "kernels": [3], "expand_channels": 48, "filters": 24, "stride": 2,
                     "act": "hswish"}]],
        "head": {"filters": 64, "act": "relu", "dropout": 0.0, "classes": 4},
        "bn": {"eps": 1e-3, "momentum": 0.9}}
SHAPES_CLASSES = 10
VAL_LIMIT = 256
# 2 epochs x 40 steps of batch 32 on 512 shapes images: about 15 s on 2 CPU cores.
TRAIN_ARGS = ("--dataset=shapes", "--limit=512", "--epochs=2", "--steps_per_epoch=40", "--batch_size=32",
              "--lr=0.1", "--warmup_epochs=0.2", "--augment=none", "--label_smoothing=0.1", "--weight_decay=1e-4",
              f"--val_limit={VAL_LIMIT}", "--checkpoint_every=10", "--noprogress", "--seed=1")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    return write_spec(tmp_path_factory.mktemp("spec"), TINY)


@pytest.fixture(scope="module")
def trained(spec_file, tmp_path_factory):
    """One training run shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("train") / "out"
    r = run_module("recipes.train", f"--model={spec_file}", f"--out_dir={out}", *TRAIN_ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


@pytest.mark.slow
def test_train_outputs_and_model_card(trained, spec_file):
    out, r = trained
    card = json.loads((out / "model_card.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert card["sha256"] == sha256(out / "weights.npz") and card["file"] == "weights.npz"
    assert card["model"] == "tiny_train" and card["spec"]["name"] == "tiny_train"
    assert card["spec_path"] == str(spec_file)
    assert card["dataset"] == "shapes" and card["input_size"] == 32 and card["classes"] == SHAPES_CLASSES
    assert card["epochs"] == 2 and card["steps_per_epoch"] == 40 and card["steps"] == 80 and card["batch_size"] == 32
    assert card["data"]["train_examples"] == 512 and card["data"]["val_examples"] == VAL_LIMIT
    opt = card["optimizer"]
    assert opt["name"] == "sgd" and opt["lr"] == 0.1 and opt["warmup_steps"] == 8 and opt["weight_decay"] == 1e-4
    assert "decoupled" in opt["weight_decay_mode"] and opt["label_smoothing"] == 0.1
    assert card["seed"] == 1 and card["strategy"] == "default" and card["replicas"] == 1
    assert card["resumed"] is None and card["init"]["path"] is None
    assert set(card["versions"]) >= {"tensorflow", "keras"} and card["wall_time_s"] > 0
    for key in ("train_loss", "train_top1", "val_top1", "val_top5", "val_loss"):
        assert 0 <= card["metrics"][key] < 10, key
    assert [h["epoch"] for h in history] == [0, 1]
    assert card["metrics"]["val_top1"] == history[-1]["val_top1"]
    # warm-up then cosine decay to 0 at the last step
    assert history[0]["lr_end"] == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 32 / 72)), rel=1e-4)
    assert history[-1]["lr_end"] == pytest.approx(0.0, abs=1e-7)
    assert glob.glob(str(out / "tensorboard" / "**" / "events.out.tfevents.*"), recursive=True)
    assert not (out / "backup").exists()
    with np.load(out / "weights.npz") as w:
        assert w["classifier/kernel"].shape == (64, SHAPES_CLASSES) and "stem_conv/kernel" in w.files
    assert "val top-1" in r.stdout


@pytest.mark.slow
def test_train_learns(trained):
    out, _ = trained
    history = json.loads((out / "history.json").read_text())
    assert history[1]["loss"] < history[0]["loss"] - 0.1, history
    chance = 1 / SHAPES_CLASSES
    assert history[1]["val_top1"] > 2 * chance, history  # measured: 0.34 (chance 0.10)
    assert history[1]["top1"] > 2 * chance, history


@pytest.mark.slow
def test_evaluate_reproduces_val_top1(trained, spec_file, tmp_path):
    out, _ = trained
    card = json.loads((out / "model_card.json").read_text())
    result = tmp_path / "eval.json"
    r = run_module("recipes.evaluate", f"--model={spec_file}", f"--weights={out / 'weights.npz'}", "--dataset=shapes",
                   "--split=test", f"--limit={VAL_LIMIT}", "--batch_size=64", f"--json={result}")
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads(result.read_text())
    assert ev["examples"] == VAL_LIMIT and ev["classes"] == SHAPES_CLASSES and ev["weights_sha256"] == card["sha256"]
    # the same examples and weights: equal up to one example (batching may change the last bits of a logit)
    assert abs(ev["top1"] - card["metrics"]["val_top1"]) <= 1 / VAL_LIMIT + 1e-6, (ev, card["metrics"])
    assert abs(ev["top5"] - card["metrics"]["val_top5"]) <= 1 / VAL_LIMIT + 1e-6, (ev, card["metrics"])
    assert "top-1" in r.stdout and "top-5" in r.stdout and f"{VAL_LIMIT} examples" in r.stdout
    # the same on three CPU replicas with a last batch (250 % 64 = 58 images) that does not split over them: padded
    # with weight-0 rows (training.distribute.pad_for_replicas), the numbers are the default strategy's
    mirrored = tmp_path / "eval3.json"
    r = run_module("recipes.evaluate", f"--model={spec_file}", f"--weights={out / 'weights.npz'}", "--dataset=shapes",
                   "--split=test", "--limit=250", "--batch_size=63", "--strategy=mirrored", "--cpu_replicas=3",
                   f"--json={mirrored}")
    assert r.returncode == 0, r.stderr[-3000:]
    plain = tmp_path / "eval1.json"
    r = run_module("recipes.evaluate", f"--model={spec_file}", f"--weights={out / 'weights.npz'}", "--dataset=shapes",
                   "--split=test", "--limit=250", "--batch_size=63", f"--json={plain}")
    m, p = json.loads(mirrored.read_text()), json.loads(plain.read_text())
    assert m["examples"] == p["examples"] == 250
    for key in ("top1", "top5", "loss"):
        assert m[key] == pytest.approx(p[key], abs=1e-5), key


@pytest.mark.slow
def test_weights_with_other_class_count_skip_the_classifier(trained, spec_file, tmp_path):
    """A 4-class checkpoint (made from the trained one) seeds a 10-class run: all but the classifier load."""
    out, _ = trained
    with np.load(out / "weights.npz") as w:
        arrays = {k: w[k] for k in w.files}
    arrays["classifier/kernel"] = arrays["classifier/kernel"][:, :4]
    arrays["classifier/bias"] = arrays["classifier/bias"][:4]
    init = tmp_path / "four_classes.npz"
    np.savez(init, **arrays)
    run_dir = tmp_path / "run"
    r = run_module("recipes.train", f"--model={spec_file}", f"--weights={init}", f"--out_dir={run_dir}",
                   "--dataset=shapes", "--limit=64", "--epochs=1", "--steps_per_epoch=2", "--batch_size=32",
                   "--warmup_epochs=0", "--lr=1e-7", "--weight_decay=0", "--val_limit=0", "--noprogress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "classifier not loaded" in r.stderr
    card = json.loads((run_dir / "model_card.json").read_text())
    assert card["init"]["skipped"] == ["classifier/bias", "classifier/kernel"]
    assert card["init"]["loaded"] == len(arrays) - 2 and card["init"]["sha256"] == sha256(init)
    assert "val_top1" not in card["metrics"] and card["data"]["val_examples"] == 0
    with np.load(run_dir / "weights.npz") as w:
        assert w["classifier/kernel"].shape == (64, SHAPES_CLASSES)
        for key in ("stem_conv/kernel", "s1_b0_project_conv/kernel", "head_conv/kernel"):
            np.testing.assert_allclose(w[key], arrays[key], atol=1e-4, err_msg=key)  # lr 1e-7: still the init


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus(spec_file, tmp_path):
    out = tmp_path / "mirrored"
    r = run_module("recipes.train", f"--model={spec_file}", f"--out_dir={out}", "--strategy=mirrored",
                   "--cpu_replicas=2", "--dataset=shapes", "--limit=128", "--epochs=1", "--steps_per_epoch=4",
                   "--batch_size=32", "--warmup_epochs=0", "--val_limit=64", "--noprogress")
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["strategy"] == "mirrored" and card["replicas"] == 2 and card["steps"] == 4
    assert card["sha256"] == sha256(out / "weights.npz") and 0 <= card["metrics"]["val_top1"] <= 1


def _free_ports(n: int) -> list[int]:
    import socket
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_multi_worker_two_processes(spec_file, tmp_path):
    """``--strategy=multi_worker`` with two worker processes on localhost (``TF_CONFIG``): the same command in both,
    gradients all-reduced across them; worker 0 is the chief and writes the run, worker 1 keeps nothing."""
    out = tmp_path / "mw"
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    args = [f"--model={spec_file}", f"--out_dir={out}", "--strategy=multi_worker", "--dataset=shapes", "--limit=128",
            "--epochs=1", "--steps_per_epoch=4", "--batch_size=32", "--val_limit=64", "--noprogress"]
    procs = [run_module("recipes.train", *args, wait=False, log=tmp_path / f"w{i}.log",
                        TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}))
             for i in range(2)]
    try:
        rcs = [p.wait(timeout=480) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert rcs == [0, 0], "\n\n".join(log[-2000:] for log in logs)
    card = json.loads((out / "model_card.json").read_text())
    assert card["strategy"] == "multi_worker" and card["replicas"] == 2 and card["steps"] == 4
    assert card["sha256"] == sha256(out / "weights.npz") and 0 <= card["metrics"]["val_top1"] <= 1
    assert not (out / ".worker1").exists()  # the non-chief's scratch directory is removed


@pytest.mark.slow
def test_kill_and_resume(spec_file, tmp_path):
    """SIGKILL a run once a checkpoint past epoch 1 exists; the same command then finishes from there."""
    out = tmp_path / "resume"
    args = [f"--model={spec_file}", f"--out_dir={out}", "--dataset=shapes", "--limit=256", "--epochs=3",
            "--steps_per_epoch=40", "--batch_size=32", "--warmup_epochs=0.5", "--checkpoint_every=7",
            "--val_limit=64", "--noprogress"]
    proc = run_module("recipes.train", *args, wait=False, log=tmp_path / "first.log")
    meta_path = out / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 300
    meta = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = None
            if meta and meta["epoch"] >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the first run ended before it could be killed:\n" + \
            (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert meta and meta["epoch"] >= 1, "no checkpoint past epoch 1 appeared"
    assert not (out / "weights.npz").exists() and not (out / "model_card.json").exists()

    r = run_module("recipes.train", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from the checkpoint" in r.stderr
    card = json.loads((out / "model_card.json").read_text())
    history = json.loads((out / "history.json").read_text())
    resumed_from = card["resumed"]["from_epoch"]
    assert resumed_from >= 1
    assert [h["epoch"] for h in history] == [0, 1, 2]
    # fewer epochs ran in the second process: Keras prints "Epoch k/3" only for the epochs it runs
    assert "Epoch 1/3" not in r.stdout and f"Epoch {resumed_from + 1}/3" in r.stdout, r.stdout
    assert history[-1]["lr_end"] == pytest.approx(0.0, abs=1e-7)
    assert card["sha256"] == sha256(out / "weights.npz") and not (out / "backup").exists()


def _write_unfinished_run(out, settings):
    (out / "backup").mkdir(parents=True)
    (out / "train_settings.json").write_text(json.dumps(settings))


@pytest.mark.parametrize("case, args, needle", [
    ("unknown model", ("--model=not_a_model",), "unknown model"),
    ("no model", (), "--model"),
    ("missing weights file", ("--weights=/nonexistent/w.npz",), "no such file"),
    ("unknown weights tag", ("--weights=imagenet",), "has no weights"),
    ("corrupt weights", ("--weights={tmp}/corrupt.npz",), "not an .npz weights archive"),
    ("bad dataset", ("--dataset=Not A Dataset!",), "not 'shapes'"),
    ("missing folder", ("--dataset=folder:/nonexistent/data",), "no such directory"),
    ("folder without test split", ("--dataset=folder:{tmp}/flat",), "no test split"),
    ("epochs 0", ("--epochs=0",), "epochs"),
    ("batch vs replicas", ("--strategy=mirrored", "--cpu_replicas=2", "--batch_size=33"), "does not split"),
    ("warmup too long", ("--epochs=2", "--warmup_epochs=2"), "--warmup_epochs"),
    ("input size", ("--input_size=4",), "input_size"),
    ("stray argument", ("extra",), "unexpected arguments"),
    ("other settings", ("--lr=0.3",), "other settings"),
])
def test_train_bad_input(case, args, needle, spec_file, tmp_path):
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
    for c in ("a", "b"):  # class folders without train/ and test/: no validation split
        (tmp_path / "flat" / c).mkdir(parents=True)
        write_tiny_png(tmp_path / "flat" / c / "x.png")
    out = tmp_path / "out"
    if case == "other settings":
        _write_unfinished_run(out, {"lr": 0.05})
    model = [] if case in ("unknown model", "no model") else [f"--model={spec_file}"]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    defaults = [d for d in ("--epochs=1", "--warmup_epochs=0") if d.split("=")[0] not in " ".join(args)]
    r = run_module("recipes.train", *model, *defaults, *args, f"--out_dir={out}")
    assert needle in error_line(r, "recipes.train"), (case, r.stderr)
    written = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert written in ([], ["backup", "train_settings.json"]), (case, written)


@pytest.mark.parametrize("args, needle", [
    ((), "--weights: required"),
    (("--weights=/nonexistent.npz",), "no such file"),
    (("--weights=imagenet",), "--weights= (empty) starts from random"),
    (("--weights=", "--input_size=4"), "input_size"),
])
def test_evaluate_bad_input(args, needle, spec_file, tmp_path):
    r = run_module("recipes.evaluate", f"--model={spec_file}", *args, f"--json={tmp_path / 'e.json'}")
    assert needle in error_line(r, "recipes.evaluate"), r.stderr
    assert not (tmp_path / "e.json").exists()


@pytest.mark.slow
def test_evaluate_refuses_other_class_count(trained, tmp_path):
    """Weights of a 10-class classifier on a 3-class folder dataset: refused before TensorFlow starts."""
    out, _ = trained
    for c in ("a", "b", "c"):
        (tmp_path / "data" / c).mkdir(parents=True)
        write_tiny_png(tmp_path / "data" / c / "x.png")
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY))
    r = run_module("recipes.evaluate", f"--model={spec}", f"--weights={out / 'weights.npz'}",
                   f"--dataset=folder:{tmp_path / 'data'}", "--split=train")
    line = error_line(r, "recipes.evaluate")
    assert "10-class classifier" in line and "has 3" in line, r.stderr


def test_divergence_guard_stops_fit_before_the_backup_saves(tmp_path):
    """`training.backup.divergence_guard` (first in recipes.train's callbacks) raises `Diverged` at the first
    non-finite training loss, before the backup callback could save that step."""
    import keras

    from common.errors import Diverged
    from training.backup import divergence_guard

    class Boom(keras.callbacks.Callback):
        saved = 0

        def on_train_batch_end(self, batch, logs=None):
            Boom.saved += 1

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")
    x, y = np.ones((32, 4), "float32") * 1e10, np.ones((32, 1), "float32")
    with pytest.raises(Diverged, match=r"the loss became (NaN|infinite) at epoch 1 step \d+: lower --lr"):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[divergence_guard("lower --lr"), Boom()])
    assert Boom.saved < 4


@pytest.mark.slow
def test_a_diverging_run_is_one_line_and_writes_no_results(tmp_path):
    """A learning rate and weight decay within their bounds that still make the loss non-finite: one line, exit 2,
    no weights.npz / model_card.json / backup (a rerun in the same --out_dir starts over)."""
    out = tmp_path / "run"
    r = run_module("recipes.train", "--model=metakernel_cifar10_3m", "--dataset=shapes", "--input_size=32",
                   "--epochs=1", "--steps_per_epoch=2", "--limit=64", "--val_limit=32", "--noprogress",
                   "--lr=1000", "--weight_decay=1", f"--out_dir={out}", timeout=600)
    line = error_line(r, "recipes.train")
    assert "became NaN" in line or "became infinite" in line, line
    assert "lower --lr (it is 1000)" in line, line
    assert not {"weights.npz", "model_card.json", "backup", "history.json"} & set(os.listdir(out))


def test_padded_loss_scale_undoes_keras_averaging_over_padding_rows():
    """Keras' val_loss over a pad_for_replicas dataset is Σ loss / (examples + padding): measured 10/12 and 8/9 of
    the one-replica value on three CPU replicas (stop 32 sweep); the scale restores it."""
    from training.distribute import padded_loss_scale
    assert padded_loss_scale(10, 48, 3) == pytest.approx(12 / 10)
    assert padded_loss_scale(8, 9, 3) == pytest.approx(9 / 8)
    assert padded_loss_scale(100, 48, 3) == pytest.approx(102 / 100)  # only the last batch (4 rows) is padded
    assert padded_loss_scale(96, 48, 3) == padded_loss_scale(10, 48, 1) == 1.0
