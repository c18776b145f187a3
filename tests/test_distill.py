"""Distillation as the training task (training/distill.py) and its train-recipe wiring."""
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import randomized_weights, run_module, write_spec

from common.checks import ConfigError
from training.distill import distillation_loss, mix_batch, parse_teacher


def test_parse_teacher():
    assert parse_teacher("") == ("", "")
    assert parse_teacher("efficientnet_lite0:imagenet") == ("efficientnet_lite0", "imagenet")
    assert parse_teacher("runs/a:b/spec.json:runs/w.npz") == ("runs/a:b/spec.json", "runs/w.npz")
    for bad in ("efficientnet_lite0", ":imagenet", "efficientnet_lite0:"):
        with pytest.raises(ConfigError, match="--teacher"):
            parse_teacher(bad)


def _batch():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (8, 16, 16, 3)).astype(np.float32))
    y = tf.one_hot(tf.constant(rng.integers(0, 5, 8)), 5)
    return x, y


@pytest.mark.parametrize("mode", ["mixup", "cutmix", "both"])
def test_mixing_blends_images_and_targets_alike(mode):
    x, y = _batch()
    for i in range(6):
        xm, ym = mix_batch(x, y, mode, 1.0, tf.constant([3, i], tf.int64))
        xm, ym = xm.numpy(), ym.numpy()
        np.testing.assert_allclose(ym.sum(-1), 1.0, rtol=1e-6)  # still a distribution
        assert xm.min() >= 0 and xm.max() <= 255
        # each mixed target puts weight on at most two classes, and on the image's own class unless it was replaced
        assert ((ym > 1e-6).sum(-1) <= 2).all()
        if mode == "cutmix":  # pixels are either the image's own or its partner's, never blended
            own = np.isclose(xm, x.numpy()).all(-1)
            kept = own.mean(axis=(1, 2))
            lam = (ym * y.numpy()).sum(-1)  # the weight left on the image's own class (partner of another class)
            other = (y.numpy().argmax(-1) != ym.argmax(-1)) | (lam < 1)
            assert np.all(kept[other] >= lam[other] - 1e-6)
    assert mix_batch(x, y, "none", 1.0, tf.constant([0, 0], tf.int64))[0] is x


def test_distillation_loss_is_minimal_where_the_student_matches_the_teacher():
    t_logits = tf.constant([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    for temperature in (1.0, 4.0):
        target = tf.nn.softmax(t_logits / temperature)
        loss = distillation_loss(temperature)
        student = tf.Variable(t_logits)
        with tf.GradientTape() as tape:
            per_example = loss(target, student)
            value = tf.reduce_mean(per_example)
        # one loss per example: Keras applies sample weights (a padded validation batch) and the replicas' reduction
        # once; a scalar here was reduced twice under a mirrored strategy (val_loss R times too small)
        assert per_example.shape == (2,)
        np.testing.assert_allclose(tape.gradient(value, student).numpy(), 0.0, atol=1e-6)
        worse = loss(target, t_logits + tf.constant([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
        assert float(tf.reduce_mean(worse)) > float(value)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(spec path, weights path) of a tiny 10-class teacher with randomised weights."""
    from conftest import tiny_spec_dict

    import zoo
    from models.weights import assign, save_npz
    d = tmp_path_factory.mktemp("teacher")
    spec = write_spec(d, tiny_spec_dict(name="teacher", head={"filters": 32, "act": "relu", "dropout": 0.0,
                                                               "classes": 10}))
    model = zoo.build(str(spec))
    assign(model, randomized_weights(model, seed=5))
    save_npz(model, str(d / "teacher.npz"))
    return spec, d / "teacher.npz"


@pytest.mark.parametrize("value, needle", [
    ("no_such_model:imagenet", "--teacher=no_such_model:imagenet"),
    ("efficientnet_lite0", "expected MODEL:WEIGHTS"),
    ("efficientnet_lite0:imagenet", "a 1000-class teacher, but --dataset=shapes has 10 classes"),
])
def test_bad_teachers_are_one_line(value, needle, teacher, tmp_path):
    from workflows import train
    spec, _ = teacher
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        train.validate(train.TrainConfig(model=str(spec), epochs=1, teacher=value, out_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_temperature_needs_a_teacher_and_a_finite_value(teacher, tmp_path):
    from workflows import train
    spec, _ = teacher
    for changes, needle in (({"temperature": 2.0}, "needs --teacher"), ({"mix_alpha": float("nan")}, "finite"),
                            ({"temperature": float("inf"), "teacher": "x:y"}, "finite")):
        with pytest.raises(ConfigError, match=needle):
            train.validate(train.TrainConfig(model=str(spec), epochs=1, out_dir=str(tmp_path / "o"), **changes))


def test_search_takes_the_same_teacher_checks(tmp_path):
    from workflows import search_metakernel as sm
    config = sm.SearchMetakernelConfig(target_macs=2e6, teacher="efficientnet_lite0:imagenet",
                                       out_dir=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="a 1000-class teacher, but --dataset=shapes has 10 classes"):
        sm.validate(config)
    with pytest.raises(ConfigError, match="--mix"):
        sm.validate(sm.SearchMetakernelConfig(target_macs=2e6, mix="blend", out_dir=str(tmp_path / "s")))


@pytest.mark.slow
def test_train_distils_from_a_teacher(teacher, tmp_path):
    """A distillation run through the command line: it trains, and its card and resume identity record the teacher,
    the temperature and the mixing."""
    spec, weights = teacher
    out = tmp_path / "run"
    r = run_module("recipes.train", f"--model={spec}", f"--weights={weights}", "--dataset=shapes", "--epochs=1",
                   "--steps_per_epoch=2", "--batch_size=16", "--limit=64", "--val_limit=32", "--lr=1e-6",
                   f"--teacher={spec}:{weights}", "--mix=both", "--mix_alpha=1.0", "--temperature=2.0", "--noprogress",
                   f"--out_dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["distillation"]["teacher"] == f"{spec}:{weights}" and card["distillation"]["temperature"] == 2.0
    assert card["mix"] == {"mode": "both", "alpha": 1.0}
    settings = json.loads((out / "train_settings.json").read_text())
    assert settings["teacher"] == f"{spec}:{weights}" and settings["mix"] == "both"
    assert np.isfinite(card["metrics"]["train_loss"]) and 0 <= card["metrics"]["val_top1"] <= 1


def test_teacher_sees_the_students_view(teacher, tmp_path):
    """Function matching: the targets of every batch are the teacher's softened outputs on that batch's own
    (augmented, mixed) images."""
    import zoo
    from models.weights import assign
    from workflows import train
    spec, weights = teacher
    config = train.TrainConfig(model=str(spec), epochs=1, teacher=f"{spec}:{weights}", temperature=3.0, mix="mixup",
                               mix_alpha=1.0, out_dir=str(tmp_path / "o"))
    plan = train.validate(config)
    x, y = _batch()
    x = tf.image.resize(x, (32, 32))
    y = tf.one_hot(tf.argmax(y, -1), 10)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(2)
    mixed, model = train._distillation_pipeline(config, plan, ds, 10)
    ref = zoo.build(str(spec), input_size=32)
    assign(ref, dict(np.load(weights)))
    for xb, yb in mixed:
        assert not np.allclose(xb.numpy(), x.numpy())  # mixed
        expected = tf.nn.softmax(ref(xb, training=False) / 3.0).numpy()
        np.testing.assert_allclose(yb.numpy(), expected, atol=1e-5)
    assert model is not None and not model.trainable
