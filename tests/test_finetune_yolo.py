"""detection.finetune / detection.trainer and their command line recipes.finetune_yolo: the learning-rate schedule,
freezing/unfreezing with the optimizers covering the backbone, validation in-process without TensorFlow, an
end-to-end run on the synthetic boxes that is SIGKILLed and resumed (outputs, TFLite parity), refusal of changed
settings and of bad flags (one line, exit 2). A tiny backbone at 64×64 keeps it fast."""
import dataclasses
import json
import re

import numpy as np
import pytest
from conftest import error_line, kill_once_exists, run_module, run_python, tiny_backbone, write_spec

from common.errors import InputError
from common.rundir import SettingsMismatch
from detection import finetune

SIZE = 64
TINY = tiny_backbone("tiny_det_backbone", SIZE)


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    return str(write_spec(tmp_path_factory.mktemp("finetune_yolo"), TINY))


def recipe(*args, wait=True):
    return run_module("recipes.finetune_yolo", *args, timeout=300, wait=wait)


COLOURS = {"blue": (40, 60, 230), "green": (40, 220, 60), "red": (230, 40, 40)}


def write_voc(root, splits: dict, extra_objects: dict | None = None) -> str:
    """A tiny VOC layout: 64×48 grey JPEGs, each with one or two coloured rectangles named by their colour;
    ``splits``: split name → image ids (id ``i`` gets ``COLOURS`` names by ``i``; ``g*`` ids hold a green one);
    ``extra_objects``: id → more ``(name, xmin, ymin, xmax, ymax)`` written only to its XML. Returns ``voc:root``."""
    from PIL import Image, ImageDraw
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    for n, image_id in enumerate(sorted({i for ids in splits.values() for i in ids})):
        image = Image.new("RGB", (64, 48), (114, 114, 114))
        draw = ImageDraw.Draw(image)
        names = ["green"] if image_id.startswith("g") else [("red", "blue")[n % 2], ("blue", "red")[n % 2]][:1 + n % 2]
        objects = []
        for k, name in enumerate(names):
            x0, y0 = 4 + 30 * k + n % 5, 6 + n % 7
            box = (x0, y0, x0 + 20 + n % 6, y0 + 18 + n % 4)
            draw.rectangle(box, fill=COLOURS[name])
            objects.append((name, box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1))  # VOC: 1-based inclusive
        image.save(root / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(f"<object><name>{o[0]}</name><bndbox><xmin>{o[1]}</xmin><ymin>{o[2]}</ymin><xmax>{o[3]}"
                      f"</xmax><ymax>{o[4]}</ymax></bndbox></object>"
                      for o in objects + list((extra_objects or {}).get(image_id, ())))
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>64</width><height>48</height></size>"
            f"{xml}</annotation>")
    return f"voc:{root}"


def test_lr_schedule_warms_up_then_steps_down():
    from detection.trainer import lr_at
    total, peak = 100, 1e-3
    lrs = [lr_at(s, total, peak, 10, (0.8, 0.9)) for s in range(total)]
    np.testing.assert_allclose(lrs[:10], peak * np.arange(1, 11) / 10)
    assert lrs[10:80] == [peak] * 70
    np.testing.assert_allclose(lrs[80:90], peak * 0.1)
    np.testing.assert_allclose(lrs[90:], peak * 0.01)
    assert lr_at(50, total, peak, 0, ()) == peak


def test_precise_bn_sets_exact_average_of_batch_statistics():
    """recalibrate_bn: the moving statistics of trainable BN layers become the mean over the batches of each layer's
    training-mode batch mean / biased variance (the second layer sees the first one's batch-normalised output);
    a frozen layer keeps its statistics."""
    import keras

    from training.bn import recalibrate_bn
    keras.utils.set_random_seed(0)
    x_in = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(5, 1, name="c1")(x_in)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.Conv2D(6, 1, name="c2")(keras.layers.ReLU()(h))
    h = keras.layers.BatchNormalization(name="bn2")(h)
    out = keras.layers.BatchNormalization(name="bn_frozen")(h)
    model = keras.Model(x_in, out)
    model.get_layer("bn_frozen").trainable = False
    frozen_before = model.get_layer("bn_frozen").moving_mean.numpy().copy()
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, (8, 4, 4, 3)).astype(np.float32) for _ in range(3)]
    assert recalibrate_bn(model, iter(batches)) == 3

    def stats(x):  # reference by hand: conv → batch norm with batch statistics → relu → conv
        c1 = model.get_layer("c1")(x).numpy()
        bn1 = model.get_layer("bn1")
        m, v = c1.mean((0, 1, 2)), c1.var((0, 1, 2))
        n1 = (c1 - m) / np.sqrt(v + bn1.epsilon) * bn1.gamma.numpy() + bn1.beta.numpy()
        c2 = model.get_layer("c2")(np.maximum(n1, 0)).numpy()
        return (m, v), (c2.mean((0, 1, 2)), c2.var((0, 1, 2)))

    ref = [stats(b) for b in batches]
    for i, name in enumerate(("bn1", "bn2")):
        layer = model.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean([r[i][0] for r in ref], 0), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), np.mean([r[i][1] for r in ref], 0), rtol=1e-4,
                                   atol=1e-5)
    np.testing.assert_array_equal(model.get_layer("bn_frozen").moving_mean.numpy(), frozen_before)
    assert recalibrate_bn(model, iter([])) == 0  # no batches: nothing changes
    np.testing.assert_allclose(model.get_layer("bn1").moving_mean.numpy(), np.mean([r[0][0] for r in ref], 0),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_trainer_freezes_backbone_then_trains_it(spec_path):
    import tensorflow as tf

    from detection.anchors import default_anchors
    from detection.targets import encode_targets
    from detection.trainer import Trainer
    from models import yolo
    from models.weights import named_weights
    tf.keras.utils.set_random_seed(0)
    model = yolo.build_detector(spec_path, 2, SIZE, head_width=8)
    anchors = default_anchors(SIZE)
    trainer = Trainer(model, anchors, SIZE, weight_decay=5e-4)
    # Both optimizers are built before any step, the backbone's over every non-head variable.
    assert trainer.head_opt.built and trainer.backbone_opt.built
    assert {v.path for v in trainer.head_vars + trainer.backbone_vars} == {v.path for v in model.trainable_variables}
    assert trainer.backbone_vars and not any(v.path.startswith("yolo_") for v in trainer.backbone_vars)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (2, SIZE, SIZE, 3)), tf.float32)
    boxes = tf.constant([[[4, 6, 40, 30]], [[20, 10, 60, 62]]], tf.float32)
    labels = tf.constant([[0], [1]], tf.int32)
    targets = [tf.stack(t) for t in zip(*(encode_targets(b, l, anchors, SIZE, 2) for b, l in zip(boxes, labels)))]
    batch = (images, boxes, *targets)
    trainer.set_lr(1e-2)
    before = named_weights(model)
    trainer.set_frozen(True)
    parts = trainer.step(batch)
    assert set(parts) == {"loss", "xy", "wh", "obj", "cls"} and np.isfinite(parts["loss"])
    frozen = named_weights(model)
    backbone = [k for k in before if not k.startswith("yolo_")]
    head = [k for k in before if k.startswith("yolo_") and k.endswith("/kernel")]
    # Frozen: no backbone weight moves, BatchNorm statistics included (inference mode); the head trains.
    assert all(np.array_equal(before[k], frozen[k]) for k in backbone)
    assert all(not np.array_equal(before[k], frozen[k]) for k in head)
    assert int(trainer.backbone_opt.iterations.numpy()) == 0
    trainer.set_frozen(False)
    trainer.step(batch)
    after = named_weights(model)
    moved = [k for k in backbone if not np.array_equal(frozen[k], after[k])]
    assert set(moved) == set(backbone), set(backbone) - set(moved)  # kernels, γ/β and BN moving statistics
    assert int(trainer.backbone_opt.iterations.numpy()) == 1 and int(trainer.head_opt.iterations.numpy()) == 2


@pytest.mark.slow
def test_run_is_killed_resumed_and_writes_everything(spec_path, tmp_path):
    out = tmp_path / "run"
    args = [f"--backbone={spec_path}", "--weights=", "--dataset=shapes", f"--input_size={SIZE}", "--epochs=3",
            "--batch_size=8", "--limit=16", "--val_limit=8", "--head_width=8", "--freeze_epochs=1",
            "--warmup_epochs=0.5", "--lr=3e-3", "--noprogress", f"--out_dir={out}"]
    kill_once_exists(recipe(*args, wait=False), out / "checkpoints" / "checkpoint", timeout=120)
    assert not (out / "summary.json").exists()

    # Resumed on two logical CPU replicas (mirrored), exporting int8 too: the checkpoint is strategy-independent.
    r = recipe(*args, "--strategy=mirrored", "--cpu_replicas=2", "--export=int8", "--representative_images=8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from epoch 1" in r.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["frozen"] for h in history] == [True, False, False]
    assert all({"train_loss", "train_obj", "lr", "val_map50_voc07", "val_map50_auc"} <= set(h) for h in history)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("map50_voc07", "map50_auc", "coco_ap", "coco_ap50"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["epochs"] == 3 and summary["input_size"] == SIZE and summary["train_minutes"] > 0
    assert np.array(summary["anchors"]).shape == (9, 2) and summary["settings"]["freeze_epochs"] == 1
    assert summary["export"]["float32"]["parity_max_abs"] < 1e-3
    # The parity check covers the whole 8-image val split (up to detection.tflite.PARITY_IMAGES = 32), not 4 images.
    assert summary["export"]["float32"]["parity_images"] == summary["val_images"] == 8
    # The default split names keep the val_* keys; the best epoch is chosen on val.
    assert summary["train_split"] == "train" and summary["eval_split"] == "val"
    assert summary["best_map50_voc07"] == max(h["val_map50_voc07"] for h in history)
    assert "best_weights.npz" in summary["selection"] and summary["best_epoch"] in (1, 2, 3)
    # Per-class AP50 by class name: its mean over the classes with ground truth is the mAP.
    per_class = summary["class_ap50_voc07"]
    assert list(per_class) == summary["classes"] and list(summary["class_ap50_auc"]) == summary["classes"]
    scored = [v for v in per_class.values() if v is not None]
    assert scored and all(0.0 <= v <= 1.0 for v in scored)
    assert np.mean(scored) == pytest.approx(summary["map50_voc07"])
    line = r.stdout.strip().splitlines()[-1]
    assert "val mAP50 VOC07" in line and "over 8 images" in line
    assert "AP50 VOC07 per class: " + ", ".join(
        f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in per_class.items()) in line
    assert summary["strategy"] == "mirrored" and summary["replicas"] == 2
    int8 = summary["export"]["int8"]
    assert int8["calibration_images"] == 8 and 0.0 <= int8["map50_voc07"] <= 1.0 and int8["bytes"] > 0
    assert 0.0 < int8["raw_mean_abs_diff"] < int8["raw_keras_mean_abs"]  # quantized, yet close to the float outputs
    for name in ("predictions.png", "best_weights.npz", "last_weights.npz", "model_float32.tflite",
                 "model_int8.tflite"):
        assert (out / name).stat().st_size > 0, name
    assert any((out / "tensorboard").iterdir())
    # The last weights reproduce the final model (loadable into a fresh detector).
    from models import yolo
    from models.weights import load_npz
    model = yolo.build_detector(spec_path, len(summary["classes"]), SIZE, head_width=8)
    load_npz(model, str(out / "last_weights.npz"))

    # The same out_dir with other settings is refused before any work.
    r = recipe(*[a for a in args if not a.startswith("--lr=")], "--lr=1e-2")
    assert "other settings (lr)" in error_line(r, "recipes.finetune_yolo"), r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--dataset=voc:/nonexistent/voc"], "/nonexistent/voc"),
    (["--input_size=80"], "multiple of 32"),
    (["--backbone=no_such_net"], "no_such_net"),
    (["--anchors=fancy"], "anchors"),
    (["--lr_steps=0.9,0.5"], "--lr_steps"),
    (["--freeze_epochs=5", "--epochs=2"], "--freeze_epochs"),
])
def test_bad_flags_one_line_exit_2(args, needle, tmp_path):
    r = recipe(*args, f"--out_dir={tmp_path / 'x'}")
    assert needle in error_line(r, "recipes.finetune_yolo"), r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("fields,needle", [
    ({"dataset": "voc:/nonexistent/voc"}, "/nonexistent/voc"),
    ({"input_size": 80}, "multiple of 32"),
    ({"backbone": "no_such_net"}, "no_such_net"),
    ({"anchors": "fancy"}, "--anchors=fancy"),
    ({"lr_steps": ("0.9", "0.5")}, "--lr_steps=0.9,0.5: fractions must be increasing"),
    ({"lr_steps": ("x",)}, "--lr_steps=x: not a list of numbers"),
    ({"freeze_epochs": 5, "epochs": 2}, "--freeze_epochs=5 is above --epochs=2"),
    ({"head_width": 6}, "--head_width=6"),
    ({"cpu_replicas": 2}, "needs --strategy=mirrored"),
    ({"strategy": "mirrored", "cpu_replicas": 3}, "does not split"),
    ({"epochs": 0}, "--epochs=0: must be at least 1"),
    ({"weights": "/nonexistent/w.npz"}, "/nonexistent/w.npz"),
    ({"train_split": "val"}, "--train_split=val and --val_split=val: the same split"),
    ({"train_split": "trainval"}, "--train_split=trainval: shapes has no split 'trainval' (have train, val)"),
    ({"val_split": "test"}, "--val_split=test: shapes has no split 'test'"),
])
def test_validate_in_process_raises_input_errors(fields, needle, tmp_path):
    config = finetune.FinetuneConfig(**{"weights": "", "out_dir": str(tmp_path / "x"), **fields})
    with pytest.raises(InputError, match=re.escape(needle)):
        finetune.validate(config)
    assert not (tmp_path / "x").exists()


def test_voc_splits_are_checked_before_anything_runs(spec_path, tmp_path):
    """--train_split and --val_split of a VOC layout: a missing list or a name that is not a plain file name is one
    line naming the flag and the file (exit 2 on the command line), before TensorFlow and before any write."""
    dataset = write_voc(tmp_path / "voc", {"train": ["a0", "a1"], "test": ["b0"]})
    lists = tmp_path / "voc" / "ImageSets" / "Main"
    config = finetune.FinetuneConfig(backbone=spec_path, weights="", dataset=dataset, input_size=SIZE,
                                     out_dir=str(tmp_path / "x"))
    with pytest.raises(InputError, match=re.escape(f"--val_split=val: no split list {lists / 'val.txt'} "
                                                   f"(have test, train)")):
        finetune.validate(config)
    with pytest.raises(InputError, match=re.escape(f"--train_split=trainval: no split list {lists / 'trainval.txt'}")):
        finetune.validate(dataclasses.replace(config, train_split="trainval", val_split="test"))
    with pytest.raises(InputError, match=r"--train_split='\.\./train': not a VOC split name"):
        finetune.validate(dataclasses.replace(config, train_split="../train", val_split="test"))
    finetune.validate(dataclasses.replace(config, val_split="test"))
    assert not (tmp_path / "x").exists()
    line = error_line(recipe(f"--backbone={spec_path}", "--weights=", f"--dataset={dataset}", f"--input_size={SIZE}",
                             "--train_split=trainval", "--val_split=test", f"--out_dir={tmp_path / 'x'}"),
                      "recipes.finetune_yolo")
    assert f"--train_split=trainval: no split list {lists / 'trainval.txt'}" in line
    line = error_line(recipe(f"--dataset={dataset}", "--train_split=test", "--val_split=test",
                             f"--out_dir={tmp_path / 'x'}"), "recipes.finetune_yolo")
    assert "--train_split=test and --val_split=test: the same split" in line
    assert not (tmp_path / "x").exists()


def test_overlapping_splits_are_warned(spec_path, tmp_path, monkeypatch, capsys):
    """Splits that share images (trainval and val) are allowed, with one warning naming an image, before TensorFlow
    (the run is stopped where it would create its tf.distribute strategy)."""
    import training.distribute

    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop
    monkeypatch.setattr(training.distribute, "make_strategy", stop)
    dataset = write_voc(tmp_path / "voc", {"trainval": ["a0", "a1", "a2"], "val": ["a2"]})
    with pytest.raises(Stop):
        finetune.run(finetune.FinetuneConfig(backbone=spec_path, weights="", dataset=dataset, train_split="trainval",
                                             input_size=SIZE, out_dir=str(tmp_path / "x")))
    err = capsys.readouterr().err
    assert "warning: --train_split=trainval and --val_split=val share 1 image(s) (e.g. a2)" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_voc_trainval_to_test_reports_test_and_chooses_no_weights(spec_path, tmp_path):
    """VOC07's protocol on a tiny layout: --train_split=trainval (the class names come from it: 'green' is only
    there) evaluated on --val_split=test. Everything is labelled test; no epoch is chosen on the test split (no
    best_weights.npz: the last epoch is the result, said in summary.json and the final line); per-class AP50 has
    null for the class the test split lacks. A zero-size box is one line with --on_error=raise (before anything is
    written) and one counted warning with --on_error=skip."""
    splits = {"trainval": [f"t{i}" for i in range(8)] + ["g0"], "test": ["s0", "s1", "s2"]}
    dataset = write_voc(tmp_path / "voc", splits, extra_objects={"t1": [("red", 10, 10, 10, 20)]})
    out = tmp_path / "run"
    args = [f"--backbone={spec_path}", "--weights=", f"--dataset={dataset}", "--train_split=trainval",
            "--val_split=test", f"--input_size={SIZE}", "--epochs=2", "--batch_size=4", "--head_width=8",
            "--anchors=default", "--warmup_epochs=0", "--lr=3e-3", "--bn_recal_batches=1", "--export=none",
            "--noprogress", f"--out_dir={out}"]
    line = error_line(recipe(*args), "recipes.finetune_yolo")
    assert f"{tmp_path / 'voc' / 'Annotations' / 't1.xml'}: object 2: zero-size box xmin=10 ymin=10 xmax=10" in line
    assert not out.exists()

    r = recipe(*args, "--on_error=skip")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped 0 file(s) and 1 object(s)" in r.stderr and "zero-size box" in r.stderr
    assert "epoch 2/2: " in r.stderr and "test mAP50 VOC07" in r.stderr and "share" not in r.stderr
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["train_split"], settings["val_split"]) == ("trainval", "test")
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("test_map50_voc07" in h and not any(k.startswith("val_") for k in h) for h in history)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_split"], summary["eval_split"]) == ("trainval", "test")
    assert summary["classes"] == ["blue", "green", "red"] and summary["train_images"] == 9
    assert summary["test_images"] == 3 and "val_images" not in summary
    assert summary["best_epoch"] is None and summary["best_map50_voc07"] is None
    assert "last epoch" in summary["selection"] and "test" in summary["selection"]
    per_class = summary["class_ap50_voc07"]
    assert per_class["green"] is None and all(0.0 <= per_class[k] <= 1.0 for k in ("blue", "red"))
    assert np.mean([per_class["blue"], per_class["red"]]) == pytest.approx(summary["map50_voc07"])
    assert not (out / "best_weights.npz").exists() and (out / "last_weights.npz").stat().st_size > 0
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith("best_e")]
    line = r.stdout.strip().splitlines()[-1]
    assert "test mAP50 VOC07" in line and "green n/a" in line
    assert "weights: last epoch (none chosen on the test split test)" in line


def test_validate_refuses_other_settings_and_imports_no_tensorflow(spec_path, tmp_path):
    config = finetune.FinetuneConfig(backbone=spec_path, weights="", input_size=SIZE, out_dir=str(tmp_path / "run"))
    spec, weights = finetune.validate(config)
    assert spec.name == "tiny_det_backbone" and weights is None and not (tmp_path / "run").exists()
    finetune.run_dir(config, spec).start()  # what run() writes first
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert saved["lr_steps"] == ["0.8", "0.9"] and set(saved) == set(finetune.RESUME_KEYS) | {"spec"}
    finetune.validate(config)  # the same settings: a resume
    finetune.validate(dataclasses.replace(config, export="none", progress=False, strategy="mirrored"))
    with pytest.raises(SettingsMismatch, match=r"other settings \(lr\)"):
        finetune.validate(dataclasses.replace(config, lr=1e-2))
    assert saved["train_split"] == "train"  # part of the identity: another training split is another run
    with pytest.raises(SettingsMismatch, match=r"other settings \(train_split, val_split\)"):
        finetune.validate(dataclasses.replace(config, train_split="val", val_split="train"))
    # A settings.json written before --train_split existed reads as train_split=train: that run still resumes.
    (tmp_path / "run" / "settings.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "train_split"}))
    finetune.validate(config)
    code = ("import sys; from detection import finetune as F; "
            f"F.validate(F.FinetuneConfig(backbone={spec_path!r}, weights='', input_size={SIZE}, "
            f"out_dir={str(tmp_path / 'other')!r})); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'")
    r = run_python(code, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_config_choices_match_the_library():
    from detection.loss import BOX_LOSSES
    assert finetune.CHOICES["box_loss"] == BOX_LOSSES
    fields = {f.name for f in dataclasses.fields(finetune.FinetuneConfig)}
    assert set(finetune.LOWER_BOUNDS) | set(finetune.CHOICES) | set(finetune.RESUME_KEYS) <= fields


def test_a_diverged_run_is_one_line_and_exit_2_like_every_recipe():
    """finetune_yolo's non-finite loss is a common.errors.Diverged (an InputError): recipes.cli prints its one line
    and exits 2, as recipes.train and the searches do (it used to exit 1 on its own path)."""
    from common.errors import Diverged, InputError
    assert issubclass(finetune.NonFiniteLoss, Diverged) and issubclass(Diverged, InputError)
