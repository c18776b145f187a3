"""recipes.data: the synthetic set, class folders, holdout, augmentation and one-line errors."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from recipes import data

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT / ".." / "shared" / "data" / "cifar10_subset"


def _write_png(path: Path, value: int, size: int = 12):
    img = np.full((size, size, 3), value, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(img).numpy())


@pytest.fixture
def folder(tmp_path):
    for split in ("train", "test"):
        for c, value in (("cat", 40), ("dog", 200)):
            for i in range(3):
                _write_png(tmp_path / split / c / f"{i}.png", value + i)
    return tmp_path


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_shapes_is_deterministic_and_balanced():
    a, la = data.shapes("train", 32)
    b, lb = data.shapes("train", 32)
    assert a.dtype == np.uint8 and a.shape == (data.SHAPES_SIZES["train"], 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert set(np.unique(la)) == set(range(len(data.SHAPES_CLASSES)))
    assert np.bincount(la).min() >= data.SHAPES_SIZES["train"] // len(data.SHAPES_CLASSES) - 1
    test, _ = data.shapes("test", 32)
    assert not np.array_equal(test[:10], a[:10])


def test_shapes_boxes_lie_inside_the_image():
    images, boxes = data.shapes_boxes(20, 64, seed=1)
    assert images.shape == (20, 64, 64, 3)
    for per_image in boxes:
        assert 1 <= len(per_image) <= 3
        for c, x0, y0, x1, y1 in per_image:
            assert 0 <= c < len(data.SHAPES_CLASSES) and 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_load_shapes_batches_and_holdout_is_disjoint():
    ds, info = data.load("shapes", "train", image_size=32, batch_size=50, training=False, holdout=0.2)
    hold, hinfo = data.load("shapes", "holdout", image_size=32, batch_size=50, training=False, holdout=0.2)
    n = data.SHAPES_SIZES["train"]
    assert (info.num_examples, hinfo.num_examples) == (n - round(0.2 * n), round(0.2 * n))
    x, y = _all(ds)
    hx, _ = _all(hold)
    assert x.dtype == np.float32 and x.shape[1:] == (32, 32, 3) and y.dtype == np.int32
    assert 0 <= x.min() and x.max() <= 255
    seen = {row.tobytes() for row in x.reshape(len(x), -1)}
    assert not any(row.tobytes() in seen for row in hx.reshape(len(hx), -1))


def test_training_augmentation_keeps_shape_and_range():
    ds, info = data.load("shapes", "train", image_size=32, batch_size=16, training=True, augment="paper", limit=64)
    x, y = next(iter(ds))
    assert x.shape == (16, 32, 32, 3) and float(tf.reduce_min(x)) >= 0 and float(tf.reduce_max(x)) <= 255
    assert info.num_examples == 64


def test_folder_with_splits(folder):
    ds, info = data.load(f"folder:{folder}", "train", image_size=16, batch_size=4, training=False)
    assert info.class_names == ("cat", "dog") and info.num_examples == 6
    x, y = _all(ds)
    assert x.shape == (6, 16, 16, 3) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert abs(x[y == 0].mean() - 41) < 2 and abs(x[y == 1].mean() - 201) < 2
    _, tinfo = data.load(f"folder:{folder}", "test", image_size=16, batch_size=4, training=False)
    assert tinfo.num_examples == 6


@pytest.mark.parametrize("make,needle", [
    (lambda p: p / "missing", "missing"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "empty"),
    (lambda p: ((p / "e2" / "cat").mkdir(parents=True), p / "e2")[1], "cat"),
])
def test_bad_folders_are_one_line_errors(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(data.DataError, match=needle):
        data.validate(f"folder:{path}")


def test_corrupt_image_is_named(folder):
    bad = folder / "train" / "cat" / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(data.DataError, match="broken.png"):
        data.validate(f"folder:{folder}")
    with pytest.raises(data.DataError, match="broken.png"):
        data.load(f"folder:{folder}", "train", image_size=16, batch_size=2, training=False)


def test_unknown_tfds_name_offline_is_a_data_error(monkeypatch):
    import tensorflow_datasets as tfds

    def fail(*args, **kwargs):
        raise tfds.core.registered.DatasetNotFoundError("no such dataset")

    monkeypatch.setattr(tfds, "load", fail)
    with pytest.raises(data.DataError):
        data.load("not_a_dataset", "train", image_size=32, batch_size=4, training=False)
    with pytest.raises(data.DataError):
        data.validate("Bad Name!")


def test_validate_does_not_import_tensorflow():
    code = "import sys; from recipes import data; data.validate('shapes'); print('tensorflow' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared/data/cifar10_subset not present")
def test_reads_the_real_cifar10_subset():
    ds, info = data.load(f"folder:{CIFAR}", "test", image_size=32, batch_size=32, training=False)
    assert info.num_classes == 10 and info.num_examples == 500
    x, y = next(iter(ds))
    assert x.shape == (32, 32, 32, 3) and 0 <= int(tf.reduce_min(y)) and int(tf.reduce_max(y)) < 10
