"""workflows/: each command's config is validated without TensorFlow (bad input raises an `InputError` naming the
flag), and `workflows.train.run` trains a tiny spec in-process."""
import dataclasses
import json
import os
import sys

import numpy as np
import pytest
from conftest import run_python, write_spec, write_tiny_png

from common.checks import ConfigError
from common.errors import InputError
from common.rundir import SettingsMismatch
from workflows import benchmark_latency, demo, evaluate, export_tflite, pipeline, qat, train

TINY = {"schema_version": 1, "name": "tiny_wf", "family": "mbconv",
        "input": {"size": 32, "mean": [127.5] * 3, "std": [127.5] * 3},
        "stem": {"filters": 8, "kernel": 3, "stride": 2, "act": "relu"},
        "stages": [[{"block": "ir", "kernels": [3], "expand_channels": 16, "filters": 8, "stride": 2,
                     "act": "relu"}]],
        "head": {"filters": 16, "act": "relu", "dropout": 0.0, "classes": 10}}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return str(write_spec(tmp_path_factory.mktemp("wf"), TINY))


@pytest.fixture
def files(tmp_path):
    """A corrupt .npz, a text file posing as a model, a fake .tflite and a folder dataset without test/."""
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "fake.tflite").write_bytes(b"\0" * 16)
    for c in ("a", "b"):
        (tmp_path / "flat" / c).mkdir(parents=True)
        write_tiny_png(tmp_path / "flat" / c / "x.png")
    return tmp_path


CASES = [
    (train.TrainConfig, {"model": "not_a_model"}, "unknown model"),
    (train.TrainConfig, {"weights": "/nonexistent/w.npz"}, "--weights=/nonexistent/w.npz: no such file"),
    (train.TrainConfig, {"weights": "{tmp}/corrupt.npz"}, "not an .npz weights archive"),
    (train.TrainConfig, {"dataset": "folder:{tmp}/flat"}, "no test split"),
    (train.TrainConfig, {"epochs": 2, "warmup_epochs": 2}, "--warmup_epochs"),
    (train.TrainConfig, {"epochs": 0}, "--epochs=0"),
    (train.TrainConfig, {"lr": 0.0}, "--lr"),
    (train.TrainConfig, {"cpu_replicas": 2}, "needs --strategy=mirrored"),
    (train.TrainConfig, {"input_size": 4}, "input_size"),
    (train.TrainConfig, {"out_dir": "{tmp}/notes.txt"}, "not a directory"),
    (evaluate.EvaluateConfig, {"weights": None}, "--weights: required"),
    (evaluate.EvaluateConfig, {"weights": "", "json": "{tmp}"}, "is a directory"),
    (evaluate.EvaluateConfig, {"weights": "", "dataset": "Not A Dataset!"}, "not 'shapes'"),
    (qat.QatConfig, {"classes": 4}, "--classes=10"),
    (qat.QatConfig, {"output": "{tmp}/model.bin"}, "must end with .tflite"),
    (qat.QatConfig, {"dataset": "folder:{tmp}/flat"}, "no test split"),
    (qat.QatConfig, {"optimizer": "lion"}, "--optimizer"),
    (qat.QatConfig, {"epochs": 0, "steps_per_epoch": 3}, "--steps_per_epoch=3 with --epochs=0"),
    (export_tflite.ExportConfig, {"weights": "", "mode": "int4"}, "--mode"),
    (export_tflite.ExportConfig, {"weights": "", "int8_io": True}, "--int8_io needs --mode=int8"),
    (export_tflite.ExportConfig, {"weights": "imagenet"}, "no weights 'imagenet'"),
    (export_tflite.ExportConfig, {"weights": "", "output": "{tmp}/notes.txt/m.tflite"}, "not a directory"),
    (benchmark_latency.LatencyConfig, {"model": "{tmp}/fake.tflite"}, "not a TFLite flatbuffer"),
    (benchmark_latency.LatencyConfig, {"model": "{tmp}/notes.txt"}, "neither a .tflite file nor a spec .json"),
    (benchmark_latency.LatencyConfig, {"runs": 0}, "--runs"),
    (demo.DemoConfig, {"weights": "", "images": ("/nonexistent/x.jpg",)}, "no such file"),
    (demo.DemoConfig, {"weights": "imagenet"}, "no weights 'imagenet'"),
    (pipeline.PipelineConfig, {"dataset": "folder:/nonexistent"}, "/nonexistent"),
    (pipeline.PipelineConfig, {"target_macs": 0.0}, "--target_macs"),
]


@pytest.mark.parametrize("cls, changes, needle", CASES,
                         ids=[f"{c.__module__.split('.')[-1]}-{'-'.join(ch)}" for c, ch, _ in CASES])
def test_validate_refuses_bad_input(cls, changes, needle, spec, files):
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {"model": spec} if "model" in fields else {}
    values.update({k: v.replace("{tmp}", str(files)) if isinstance(v, str) else v for k, v in changes.items()})
    if "out_dir" in fields and "out_dir" not in changes:
        values["out_dir"] = str(files / "out")
    with pytest.raises(InputError) as e:
        sys.modules[cls.__module__].validate(cls(**values))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (files / "out").exists()


def test_train_refuses_other_settings_of_an_unfinished_run(spec, tmp_path):
    out = tmp_path / "run"
    (out / "backup").mkdir(parents=True)
    config = train.TrainConfig(model=spec, epochs=1, warmup_epochs=0, out_dir=str(out))
    (out / train.SETTINGS_FILE).write_text(json.dumps(train.settings(config, train.validate(config).spec)))
    train.validate(config)  # the same settings: resumable
    with pytest.raises(SettingsMismatch, match=r"other settings \(lr\)"):
        train.validate(dataclasses.replace(config, lr=0.3))
    (tmp_path / "done").mkdir()  # a finished run (no backup/) binds nothing
    (tmp_path / "done" / train.SETTINGS_FILE).write_text("{}")
    train.validate(dataclasses.replace(config, out_dir=str(tmp_path / "done"), lr=0.3))


def test_train_default_warmup_fits_the_run(spec, tmp_path):
    """The default warm-up is one epoch, or none for a one-epoch run (so ``--epochs=1`` works unadorned); an
    explicit warm-up as long as the run stays an error."""
    one = train.TrainConfig(model=spec, epochs=1, out_dir=str(tmp_path / "a"))
    assert one.warmup_epochs == 0.0
    train.validate(one)
    assert train.settings(one, train.validate(one).spec)["warmup_epochs"] == 0.0  # the number used is the identity
    assert train.TrainConfig(model=spec, epochs=3).warmup_epochs == 1.0
    with pytest.raises(ConfigError, match="--warmup_epochs"):
        train.validate(train.TrainConfig(model=spec, epochs=1, warmup_epochs=1, out_dir=str(tmp_path / "b")))


def test_default_export_names_carry_the_weights(spec, tmp_path):
    """Exports of one model with other weights do not overwrite each other."""
    assert export_tflite.weights_label("") == "random"
    assert export_tflite.weights_label("imagenet") == "imagenet"
    assert export_tflite.weights_label("runs/train/c10 run/weights.npz") == "c10_run_weights"
    npz = tmp_path / "run_a" / "weights.npz"
    npz.parent.mkdir()
    np.savez(npz, **{"stem_conv/kernel": np.zeros((3, 3, 3, 8), np.float32)})
    names = set()
    for weights in ("", str(npz)):
        plan = export_tflite.validate(export_tflite.ExportConfig(model=spec, weights=weights, mode="int8",
                                                                 out_dir=str(tmp_path / "e")))
        names.add(os.path.basename(plan.output))
    assert names == {"tiny_wf-random-int8.tflite", "tiny_wf-run_a_weights-int8.tflite"}, names


def test_recipes_read_the_model_card_beside_the_weights(spec, tmp_path):
    """A training run's weights carry their input size, class count and names to export and evaluate: no
    --input_size/--classes needed; flags still win."""
    from models.weights import sha256
    run = tmp_path / "run"
    run.mkdir()
    npz = run / "weights.npz"
    from inputs.shapes import SHAPES_CLASSES
    names = list(SHAPES_CLASSES)  # the data's own names (other names are refused: evaluate would score nonsense)
    np.savez(npz, **{"classifier/kernel": np.zeros((32, 10), np.float32),
                     "classifier/bias": np.zeros(10, np.float32)})
    card = {"file": "weights.npz", "sha256": sha256(str(npz)), "input_size": 48, "classes": 10, "class_names": names}
    (run / "model_card.json").write_text(json.dumps(card))
    plan = export_tflite.validate(export_tflite.ExportConfig(model=spec, weights=str(npz), out_dir=str(tmp_path)))
    assert (plan.size, plan.classes, plan.labels) == (48, 10, names)
    plan = export_tflite.validate(export_tflite.ExportConfig(model=spec, weights=str(npz), input_size=32,
                                                             out_dir=str(tmp_path)))
    assert plan.size == 32
    ev = evaluate.validate(evaluate.EvaluateConfig(model=spec, weights=str(npz), dataset="shapes"))
    assert ev.size == 48
    card["class_names"] = [f"class{i}" for i in range(10)]
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="class 0 differs"):
        evaluate.validate(evaluate.EvaluateConfig(model=spec, weights=str(npz), dataset="shapes"))
    card["class_names"] = names
    card["file"] = "other.npz"  # a card about another file says nothing about this one
    (run / "model_card.json").write_text(json.dumps(card))
    assert export_tflite.validate(export_tflite.ExportConfig(model=spec, weights=str(npz),
                                                             out_dir=str(tmp_path))).labels is None


def test_validate_does_not_import_tensorflow(spec, tmp_path):
    code = (
        "import sys\n"
        "from workflows import benchmark_latency, demo, evaluate, export_tflite, pipeline, qat, train\n"
        f"spec, out = {spec!r}, {str(tmp_path)!r}\n"
        "train.validate(train.TrainConfig(model=spec, epochs=1, warmup_epochs=0, out_dir=out + '/t'))\n"
        "evaluate.validate(evaluate.EvaluateConfig(model=spec, weights=''))\n"
        "qat.validate(qat.QatConfig(model=spec, out_dir=out + '/q'))\n"
        "export_tflite.validate(export_tflite.ExportConfig(model=spec, weights='', out_dir=out + '/e'))\n"
        "benchmark_latency.validate(benchmark_latency.LatencyConfig(model=spec, json=out + '/l.json'))\n"
        "demo.validate(demo.DemoConfig(model=spec, weights='', out_dir=out + '/d'))\n"
        "pipeline.validate(pipeline.PipelineConfig(out_dir=out + '/p'))\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules)\n"
        "assert not heavy, heavy\n")
    r = run_python(code, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not os.listdir(tmp_path)  # validation writes nothing


@pytest.mark.slow
def test_train_run_in_process(spec, tmp_path):
    """One epoch of 2 steps on 64 shapes images: outputs, card and history written, backup removed."""
    out = tmp_path / "run"
    config = train.TrainConfig(model=spec, dataset="shapes", limit=64, epochs=1, steps_per_epoch=2, batch_size=32,
                               warmup_epochs=0, val_limit=32, augment="none", out_dir=str(out), progress=False,
                               produced_by="test")
    result = train.run(config)
    card = result.card
    assert result.weights_file == str(out / "weights.npz") and os.path.isfile(result.weights_file)
    assert card["steps"] == 2 and card["classes"] == 10 and card["data"]["val_examples"] == 32
    assert card["produced_by"] == "test" and card["resumed"] is None
    assert json.loads((out / "model_card.json").read_text()) == card
    assert [h["epoch"] for h in result.history] == [0]
    assert json.loads((out / train.SETTINGS_FILE).read_text()) == train.settings(config, train.validate(config).spec)
    assert not (out / "backup").exists()
    with np.load(result.weights_file) as w:
        assert w["classifier/kernel"].shape == (16, 10)


def test_pipeline_rerun_with_other_flags_is_refused(tmp_path):
    """Every pipeline flag but --out_dir is the run's identity: a rerun with another --target_macs would otherwise
    skip the finished stages and report their numbers as its own."""
    from common.rundir import SettingsMismatch
    from workflows import pipeline as P
    config = P.PipelineConfig(out_dir=str(tmp_path / "demo"), target_macs=3e6)
    P.validate(config)
    P.run_dir(config).start()
    P.validate(config)  # the same flags: resumes
    with pytest.raises(SettingsMismatch, match=r"holds a pipeline with other settings \(target_macs\)"):
        P.validate(dataclasses.replace(config, target_macs=4e6))
    with pytest.raises(P.ConfigError, match="outside what the space can reach"):
        P.validate(dataclasses.replace(config, out_dir=str(tmp_path / "b"), target_macs=10))
