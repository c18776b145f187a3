"""Input pipelines: the shapes set, class folders, splits and holdout, augmentation, errors, validate without TF."""
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_python

from common.checks import ConfigError
from inputs import classification as data
from inputs import tfds_source
from inputs.classification import DataError

CIFAR_SUBSET = Path(ROOT) / ".." / "shared" / "data" / "cifar10_subset"


def _write_png(path: Path, value: int, shape=(12, 10)) -> None:
    """A solid image whose red channel is ``value`` (identifies the example after decoding)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((*shape, 3), np.uint8)
    image[..., 0] = value
    image[..., 1] = 100
    tf.io.write_file(str(path), tf.io.encode_png(image))


def _make_folder(root: Path, classes=("cat", "dog"), per_class=3, start=0) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _write_png(root / name / f"{i}.png", start + c * per_class + i)
    return root


def _examples(dataset: str, split: str, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    ds, _ = data.load(dataset, split, image_size=16, batch_size=4, training=False, **kwargs)
    batches = list(ds.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_shapes_deterministic_balanced_and_labelled():
    images, labels = data.shapes("train", 32)
    data._shapes_cached.cache_clear()
    again, again_labels = data.shapes("train", 32)
    assert images is not again and np.array_equal(images, again) and np.array_equal(labels, again_labels)
    assert images.shape == (data.SHAPES_SIZES["train"], 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and set(np.bincount(labels)) == {data.SHAPES_SIZES["train"] // 10}
    other_seed, _ = data.shapes("train", 32, seed=1)
    test_images, test_labels = data.shapes("test", 32)
    assert not np.array_equal(images, other_seed) and not np.array_equal(images[:500], test_images)
    assert len(test_labels) == data.SHAPES_SIZES["test"] and test_labels.min() == 0 and test_labels.max() == 9


def test_shapes_boxes_inside_images_and_deterministic():
    images, boxes = data.shapes_boxes(20, 48, seed=3)
    again, again_boxes = data.shapes_boxes(20, 48, seed=3)
    assert images.shape == (20, 48, 48, 3) and np.array_equal(images, again) and boxes == again_boxes
    assert all(1 <= len(b) <= 3 for b in boxes) and {len(b) for b in boxes} == {1, 2, 3}
    for c, x0, y0, x1, y1 in (box for b in boxes for box in b):
        assert 0 <= c < len(data.SHAPES_CLASSES) and 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48


def test_load_shapes_batches_and_info():
    ds, info = data.load("shapes", "test", image_size=32, batch_size=16, training=False, limit=40)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [16, 16, 8]
    images, labels = batches[0]
    assert images.dtype == np.float32 and images.shape == (16, 32, 32, 3) and labels.dtype == np.int32
    assert 0 <= images.min() and images.max() <= 255 and images.max() > 1  # raw 0–255, not normalised
    assert info == data.DataInfo("shapes", 10, data.SHAPES_CLASSES, 40, 32)
    train, _ = data.load("shapes", "train", image_size=32, batch_size=16, training=True, limit=40)
    assert [len(b[1]) for b in train.as_numpy_iterator()] == [16, 16]  # drop_remainder defaults to training


def test_folder_reads_classes_in_order(tmp_path):
    root = _make_folder(tmp_path / "pets")
    images, labels = _examples(f"folder:{root}", "train")
    _, info = data.load(f"folder:{root}", "train", image_size=16, batch_size=4, training=False)
    assert info.class_names == ("cat", "dog") and info.num_classes == 2 and info.num_examples == 6
    assert images.shape == (6, 16, 16, 3)  # 12×10 resized on its short side and centre-cropped
    red = np.rint(images[:, 8, 8, 0]).astype(int)
    assert sorted(red) == list(range(6)) and all(labels == (red >= 3))
    with pytest.raises(DataError, match="no 'test' split"):
        data.load(f"folder:{root}", "test", image_size=16, batch_size=4, training=False)


def test_folder_train_and_test_subfolders(tmp_path):
    _make_folder(tmp_path / "train", ("a", "b", "c"), per_class=2)
    _make_folder(tmp_path / "test", ("a", "c"), per_class=1, start=50)
    _, test_labels = _examples(f"folder:{tmp_path}", "test")
    _, val_labels = _examples(f"folder:{tmp_path}", "val")
    train_images, _ = _examples(f"folder:{tmp_path}", "train")
    assert len(train_images) == 6 and sorted(test_labels) == sorted(val_labels) == [0, 2]  # labels from train/


def test_holdout_is_disjoint_and_sized(tmp_path):
    root = _make_folder(tmp_path / "d", per_class=10)
    parts = {split: _examples(f"folder:{root}", split, holdout=0.25) for split in ("train", "holdout")}
    ids = {split: set(np.rint(images[:, 8, 8, 0]).astype(int)) for split, (images, _) in parts.items()}
    assert len(ids["train"]) == 15 and len(ids["holdout"]) == 5
    assert ids["train"].isdisjoint(ids["holdout"]) and ids["train"] | ids["holdout"] == set(range(20))
    assert ids == {split: set(np.rint(_examples(f"folder:{root}", split, holdout=0.25)[0][:, 8, 8, 0]).astype(int))
                   for split in ("train", "holdout")}  # deterministic
    _, info = data.load("shapes", "holdout", image_size=32, batch_size=8, training=True, holdout=0.1, seed=5)
    assert info.num_examples == 200
    with pytest.raises(DataError, match="holdout > 0"):
        data.load("shapes", "holdout", image_size=32, batch_size=8, training=False)


@pytest.mark.parametrize("augment, size", [("standard", 32), ("paper", 32), ("standard", 64), ("paper", 64)])
def test_augmentation_keeps_shape_and_range(tmp_path, augment, size):
    root = _make_folder(tmp_path / "d", per_class=4)
    dataset = "shapes" if size == 32 else f"folder:{root}"

    def first_batch(seed):
        ds, _ = data.load(dataset, "train", image_size=size, batch_size=8, training=True, augment=augment,
                          seed=seed, limit=8)
        return next(ds.as_numpy_iterator())

    images, labels = first_batch(seed=1)
    assert images.shape == (8, size, size, 3) and images.dtype == np.float32 and labels.shape == (8,)
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert np.array_equal(images, first_batch(seed=1)[0]) and not np.array_equal(images, first_batch(seed=2)[0])


def test_corrupt_image_is_named(tmp_path):
    root = _make_folder(tmp_path / "d")
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"this is not an image")
    for check in (lambda: data.validate(f"folder:{root}"),
                  lambda: data.load(f"folder:{root}", "train", image_size=16, batch_size=2, training=False)):
        with pytest.raises(DataError, match="broken.png"):
            check()


def test_missing_empty_and_imageless_folders(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        data.validate(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        data.load(f"folder:{tmp_path / 'empty'}", "train", image_size=16, batch_size=2, training=False)
    root = _make_folder(tmp_path / "d")
    (root / "bird").mkdir()
    (root / "bird" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="bird: no images"):
        data.validate(f"folder:{root}")


def test_bad_arguments():
    with pytest.raises(DataError, match="augment"):
        data.load("shapes", "train", image_size=32, batch_size=8, training=True, augment="heavy")
    with pytest.raises(DataError, match="fewer than one batch"):
        data.load("shapes", "train", image_size=32, batch_size=8, training=True, limit=5)
    with pytest.raises(DataError, match="no split 'dev'"):
        data.load("shapes", "dev", image_size=32, batch_size=8, training=False)


def test_tfds_not_prepared_offline_fails_at_once(monkeypatch, tmp_path):
    """A tfds name not prepared under --data_dir on a host that cannot reach the download mirror: one line before
    any download is tried (tfds itself retries for minutes); prepared data loads without the network."""
    import tensorflow_datasets as tfds
    builder = SimpleNamespace(is_prepared=lambda: False, data_dir=str(tmp_path / "cifar10" / "3.0.2"))
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: builder)
    monkeypatch.setattr(tfds_source, "_reachable", lambda host, **kw: False)

    def no_download(*args, **kwargs):
        raise AssertionError("tfds.load was called")
    monkeypatch.setattr(tfds, "load", no_download)
    with pytest.raises(DataError, match=r"^cifar10: not prepared under .*3\.0\.2 and storage\.googleapis\.com is "
                                        r"unreachable.*tfds build cifar10.*--data_dir"):
        data.load("cifar10", "train", image_size=32, batch_size=8, training=True, data_dir=str(tmp_path))
    builder.is_prepared = lambda: True  # prepared: no network needed, tfds.load is reached
    with pytest.raises(DataError, match="AssertionError: tfds.load was called"):
        data.load("cifar10", "train", image_size=32, batch_size=8, training=True, data_dir=str(tmp_path))
    assert tfds_source._reachable("127.0.0.1", port=1, timeout=1.0) is False  # nothing listens on port 1


def test_tfds_failure_is_one_line(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds
    monkeypatch.setattr(tfds_source, "_check_downloadable", lambda *a: None)

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve host\nstorage.googleapis.com")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(DataError, match=r"^cifar10: .*ConnectionError: Failed to resolve host\).*--data_dir") as e:
        data.load("cifar10", "train", image_size=32, batch_size=8, training=True, data_dir=str(tmp_path))
    assert "\n" not in str(e.value)

    def unknown(*args, **kwargs):
        raise tfds.core.DatasetNotFoundError("no such dataset")

    monkeypatch.setattr(tfds, "load", unknown)
    for check in (lambda: data.load("not_a_dataset", "train", image_size=32, batch_size=8, training=False),
                  lambda: data.validate("no such dataset!")):
        with pytest.raises(DataError, match="not 'shapes', 'folder:PATH', 'tsv:PATH' or a tensorflow-datasets name"):
            check()


def test_tfds_source_holdout_limit_and_grayscale(monkeypatch):
    import tensorflow_datasets as tfds
    monkeypatch.setattr(tfds_source, "_check_downloadable", lambda *a: None)
    images = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 1), np.uint8)
    label = SimpleNamespace(names=["even", "odd"])
    info = SimpleNamespace(features={"label": label}, supervised_keys=("image", "label"),
                           splits={"train": SimpleNamespace(num_examples=20)})
    examples = tf.data.Dataset.from_tensor_slices((images, np.arange(20, dtype=np.int64) % 2))
    monkeypatch.setattr(tfds, "load", lambda name, split, **kwargs: (examples, info))
    train, train_labels = _examples("fake", "train", holdout=0.25)
    held, _ = _examples("fake", "holdout", holdout=0.25)
    assert train.shape == (15, 16, 16, 3) and train_labels.dtype == np.int32
    assert set(train[:, 0, 0, 1]) | set(held[:, 0, 0, 2]) == set(range(20)) and len(held) == 5
    _, info = data.load("fake", "holdout", image_size=16, batch_size=2, training=False, holdout=0.25, limit=3)
    assert info.num_examples == 3 and info.class_names == ("even", "odd")


def test_validate_does_not_import_tensorflow(tmp_path):
    root = _make_folder(tmp_path / "d")
    code = ("import sys; from inputs.classification import validate; validate('shapes'); validate('cifar10'); "
            f"validate('folder:{root}'); assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not CIFAR_SUBSET.is_dir(), reason="../shared/data/cifar10_subset not present")
def test_cifar10_subset_folder():
    data.validate(f"folder:{CIFAR_SUBSET}")
    ds, info = data.load(f"folder:{CIFAR_SUBSET}", "train", image_size=32, batch_size=64, training=True,
                         augment="paper")
    assert info.num_examples == 5085 and info.class_names[:2] == ("airplane", "automobile")
    for images, labels in ds.take(2).as_numpy_iterator():
        assert images.shape == (64, 32, 32, 3) and 0 <= labels.min() and labels.max() < 10
    _, test_info = data.load(f"folder:{CIFAR_SUBSET}", "test", image_size=32, batch_size=64, training=False)
    assert test_info.num_examples == 500


def test_tensorflow_datasets_lazy_imports_are_installed():
    """tensorflow-datasets 4.9.10 imports these lazily while preparing a dataset, without declaring them: missing,
    a tfds dataset fails with 'No module named importlib_resources' (blamed on the network)."""
    import importlib
    for module in ("importlib_resources", "termcolor", "etils.epath"):
        importlib.import_module(module)


def _damage(folder: Path) -> dict[str, Path]:
    """Three broken images inside a valid class folder: a truncated PNG, a PNG with a corrupted payload, a JPEG cut
    short — each still has a valid header, so only decoding finds them."""
    good = (folder / "cat" / "0.png").read_bytes()
    bad = {"truncated": folder / "cat" / "t.png", "corrupt": folder / "dog" / "c.png"}
    bad["truncated"].write_bytes(good[: len(good) // 2])
    bad["corrupt"].write_bytes(good[:40] + bytes(b ^ 0x5A for b in good[40:-12]) + good[-12:])
    jpeg = tf.io.encode_jpeg(np.full((32, 32, 3), 120, np.uint8)).numpy()
    bad["jpeg"] = folder / "dog" / "j.jpg"
    bad["jpeg"].write_bytes(jpeg[: len(jpeg) // 3])
    return bad


def test_verify_images_finds_undecodable_files_and_caches_good_ones(tmp_path, monkeypatch):
    from inputs import images
    folder = _make_folder(tmp_path / "d")
    bad = _damage(folder)
    files = sorted(str(p) for p in folder.rglob("*.*"))
    found = dict(images.verify_images(files))
    assert set(found) == {str(p) for p in bad.values()}, found
    decoded = []
    real = images._decode_problem
    monkeypatch.setattr(images, "_decode_problem", lambda p: decoded.append(p) or real(p))
    assert dict(images.verify_images(files)) == found and decoded == []  # same process: memo
    images._MEMO.clear()  # a new process: only the on-disk manifest remains
    assert dict(images.verify_images(files)) == found
    assert sorted(decoded) == sorted(found)  # good files were not decoded again; bad ones are re-checked
    (folder / "cat" / "0.png").write_bytes(bad["truncated"].read_bytes())  # a cached file that changes is re-read
    assert str(folder / "cat" / "0.png") in dict(images.verify_images(files))


def test_bad_image_is_named_before_tensorflow_or_skipped(tmp_path, capsys):
    folder = _make_folder(tmp_path / "d", per_class=4)
    bad = _damage(folder)
    dataset = f"folder:{folder}"
    with pytest.raises(DataError, match=r"\.(png|jpg): not a decodable image .*\(and 2 more in .*--on_bad_image=skip"):
        data.validate(dataset)
    with pytest.raises(DataError, match="not a decodable image"):
        data.load(dataset, "train", image_size=16, batch_size=2, training=False)
    data.validate(dataset, on_bad_image="skip")
    assert "skipping 3 image(s) that cannot be decoded" in capsys.readouterr().err
    images, labels = _examples(dataset, "train", on_bad_image="skip")
    assert len(images) == 8 and sorted(np.bincount(labels)) == [4, 4]
    with pytest.raises(DataError, match="--on_bad_image=maybe"):
        data.validate(dataset, on_bad_image="maybe")
    assert all(p.exists() for p in bad.values())  # nothing is deleted or rewritten


def test_png_with_a_bad_checksum_or_no_end_is_found(tmp_path):
    """PIL's load() alone accepts both; verify() does not (TensorFlow's decoder would fail on them mid-epoch)."""
    from inputs import images
    folder = _make_folder(tmp_path / "d", per_class=1)
    good = (folder / "cat" / "0.png").read_bytes()
    idat = good.index(b"IDAT")
    crc_at = idat + 4 + int.from_bytes(good[idat - 4:idat], "big")
    (folder / "cat" / "crc.png").write_bytes(good[:crc_at] + bytes(b ^ 0xFF for b in good[crc_at:crc_at + 4])
                                              + good[crc_at + 4:])
    (folder / "cat" / "noend.png").write_bytes(good[:good.index(b"IEND") - 4])
    found = dict(images.verify_images([str(p) for p in (folder / "cat").iterdir()]))
    assert set(found) == {str(folder / "cat" / "crc.png"), str(folder / "cat" / "noend.png")}, found


def test_skip_also_leaves_out_files_that_are_not_images(tmp_path, capsys):
    folder = _make_folder(tmp_path / "d", per_class=3)
    (folder / "cat" / "page.png").write_text("<html>404</html>")  # a saved error page
    (folder / "dog" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="page.png: not a PNG"):
        data.validate(f"folder:{folder}")
    data.validate(f"folder:{folder}", on_bad_image="skip")
    assert "skipping 2 image(s)" in capsys.readouterr().err
    images, _ = _examples(f"folder:{folder}", "train", on_bad_image="skip")
    assert len(images) == 6


IMAGENET_SAMPLE = Path(ROOT) / ".." / "shared" / "data" / "imagenet_sample"


def _tsv_dir(tmp_path, n=320, classes=7, synsets=False):
    from conftest import write_tiny_png
    d = tmp_path / "list"
    (d / "img").mkdir(parents=True)
    rows = ["file\tlabel" + ("\tsynset" if synsets else "")]
    for i in range(n):
        write_tiny_png(d / "img" / f"{i}.png", value=i % 256)
        rows.append(f"img/{i}.png\t{i % classes}" + (f"\tn{i:08d}" if synsets else ""))
    (d / "labels.tsv").write_text("\n".join(rows) + "\n")
    return d


def test_tsv_lists_have_a_fixed_disjoint_evaluation_split(tmp_path):
    d = _tsv_dir(tmp_path)
    name = f"tsv:{d}"
    data.validate(name)
    assert data.known_classes(name) == 7
    files = {}
    for split in ("train", "test"):
        ds, info = data.load(name, split, image_size=8, batch_size=64, training=False)
        files[split] = info.num_examples
        labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
        assert labels.max() < 7 and info.class_names == tuple(str(i) for i in range(7))
    assert files == {"test": data.TSV_EVAL_IMAGES, "train": 20}
    src = {s: data._tsv_source(name, s, 0.0, None, "raise") for s in ("train", "test")}
    paths = {s: set(x.decode() for x, _ in src[s].examples.as_numpy_iterator()) for s in src}
    assert not paths["train"] & paths["test"] and len(paths["train"] | paths["test"]) == 320
    again = set(x.decode() for x, _ in data._tsv_source(name, "test", 0.0, None, "raise").examples.as_numpy_iterator())
    assert again == paths["test"]  # fixed
    lines = (d / "labels.tsv").read_text().splitlines()
    (d / "labels.tsv").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")  # reordered rows
    data._tsv_table_cached.cache_clear()
    moved = set(x.decode() for x, _ in data._tsv_source(name, "test", 0.0, None, "raise").examples.as_numpy_iterator())
    assert moved == paths["test"]


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("file\tlabel", "path\tlabel", 1), "'file' and 'label'"),
    (lambda t: t.replace("img/3.png\t3", "img/3.png\tthree", 1), "line 5: label 'three' is not a class id"),
    (lambda t: t.replace("img/3.png", "img/missing.png", 1), "line 5: no such file"),
    (lambda t: t.replace("img/3.png\t3", "img/3.png\t3\textra", 1), "line 5: 3 columns"),
    (lambda t: t.replace("img/3.png\t3", "img/3.png\t1000000000", 1), "line 5: label '1000000000' is not a class id"),
    (lambda t: t + "img/3.png\t4\n", "line 322: img/3.png is labelled 4 here and 3 on line 5"),
])
def test_tsv_bad_lists_are_one_line(edit, needle, tmp_path):
    d = _tsv_dir(tmp_path)
    (d / "labels.tsv").write_text(edit((d / "labels.tsv").read_text()))
    with pytest.raises(DataError, match=needle):
        data.validate(f"tsv:{d}")
    with pytest.raises(DataError, match="no such file"):
        data.validate(f"tsv:{tmp_path / 'nowhere'}")


def test_tsv_imagenet_ids_must_be_the_standard_order(tmp_path):
    from conftest import write_tiny_png
    d = tmp_path / "inet"
    (d / "img").mkdir(parents=True)
    wnids = data._imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764"  # tench
    rows = ["file\tlabel\tsynset"] + [f"img/{i}.png\t{i}\t{wnids[i]}" for i in range(320)]
    for i in range(320):
        write_tiny_png(d / "img" / f"{i}.png")
    (d / "labels.tsv").write_text("\n".join(rows) + "\n")
    assert data.known_classes(f"tsv:{d}") == 1000
    rows[5] = f"img/4.png\t0\t{wnids[4]}"  # a renumbered subset would mislabel everything
    (d / "labels.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=f"row 5: label 0 but synset {wnids[4]} is ImageNet class 4"):
        data.validate(f"tsv:{d}")


@pytest.mark.skipif(not IMAGENET_SAMPLE.is_dir(), reason="needs ../shared/data/imagenet_sample")
def test_imagenet_sample_reads_as_imagenet_classes():
    name = f"tsv:{IMAGENET_SAMPLE}"
    assert data.known_classes(name) == 1000
    ds, info = data.load(name, "test", image_size=32, batch_size=100, training=False)
    assert info.num_examples == 300 and info.class_names[1].startswith("goldfish")
    labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    assert len(set(labels.tolist())) == 300  # one image per class


def test_split_layout_without_test_split_is_not_read_as_classes(tmp_path):
    """``D/train/<class>`` without ``D/test``: train/ is the training split (not a class named "train"), evaluation
    says the test split is missing; ``D/test`` without ``D/train`` names the missing train/."""
    from PIL import Image

    from inputs import classification as C
    for c in ("a", "b"):
        (tmp_path / "d" / "train" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "d" / "train" / c / "0.png")
    root = str(tmp_path / "d")
    assert C._folder_layout(root) == {"train": str(tmp_path / "d" / "train")}
    classes, files, labels = C._folder_examples(root, C._folder_layout(root), "train")
    assert list(classes) == ["a", "b"] and labels == [0, 1]
    with pytest.raises(C.DataError, match="no 'test' split"):
        C._folder_examples(root, C._folder_layout(root), "test")
    (tmp_path / "e" / "test" / "a").mkdir(parents=True)
    (tmp_path / "e" / "train").write_text("a file")
    with pytest.raises(C.DataError, match="has test/ but no train/ directory"):
        C._folder_layout(str(tmp_path / "e"))


def test_bmp_tensorflow_cannot_decode_is_a_bad_image(tmp_path):
    """PIL reads 1-bit and 8-bit palette BMPs, TensorFlow's decoder does not (or reads palette indices as grey):
    they are bad images named before any work; 24- and 32-bit BMPs load."""
    from PIL import Image

    from inputs.images import verify_images
    root = tmp_path / "bmp" / "train"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (40 * c, 90, 20)).save(root / name / "rgb.bmp")
        Image.new("RGBA", (8, 8), (40 * c, 90, 20, 255)).save(root / name / "rgba.bmp")
    Image.new("RGB", (8, 8), (200, 90, 20)).convert("1").save(root / "cat" / "mono.bmp")
    Image.new("RGB", (8, 8), (200, 90, 20)).convert("P").save(root / "dog" / "palette.bmp")
    bad = dict(verify_images(sorted(str(p) for p in root.rglob("*.bmp"))))
    assert set(map(os.path.basename, bad)) == {"mono.bmp", "palette.bmp"}, bad
    assert "1-bit BMP" in bad[str(root / "cat" / "mono.bmp")] and "8-bit BMP" in bad[str(root / "dog" / "palette.bmp")]
    with pytest.raises(DataError, match="mono.bmp: not a decodable image .*1-bit BMP"):
        data.load(f"folder:{root.parent}", "train", image_size=8, batch_size=2, training=False)
    _, info = data.load(f"folder:{root.parent}", "train", image_size=8, batch_size=2, training=False,
                        on_bad_image="skip")
    assert info.num_examples == 4  # the 24- and 32-bit files decode in TensorFlow


def test_glob_characters_in_folder_paths(tmp_path):
    """Brackets and stars in a data path are names, not patterns."""
    root = _make_folder(tmp_path / "br[1]" / "train", classes=("cat[x]", "dog*"))
    _make_folder(tmp_path / "br[1]" / "test", classes=("cat[x]", "dog*"))
    images, labels = _examples(f"folder:{root.parent}", "test")
    assert len(images) == 6 and sorted(set(labels)) == [0, 1]


def test_class_names_of_weights_and_data_must_agree():
    from common.errors import InputError
    from training.weights import check_class_names
    check_class_names(["airplane", "cat"], ("Airplane", "cat"), "--dataset=x")  # case does not matter
    check_class_names(["airplane", "cat"], ("0", "1"), "--dataset=x")  # bare ids of a tsv list: unknown
    check_class_names(None, ("a", "b"), "--dataset=x")
    check_class_names(["a", "b", "c"], ("x", "y"), "--dataset=x")  # other count: the count check's message
    with pytest.raises(InputError, match="class 1 differs"):
        check_class_names(["airplane", "cat"], ("airplane", "dog"), "--dataset=x")
    assert data.known_class_names("shapes")[:2] == ("circle", "square")


def _specials(directory: Path) -> dict[str, Path]:
    """A broken symbolic link, a link loop and a FIFO, each named like an image."""
    directory.mkdir(parents=True, exist_ok=True)
    made = {"a broken symbolic link": directory / "broken.png", "a symbolic link loop": directory / "loop.png",
            "a FIFO": directory / "fifo.png"}
    made["a broken symbolic link"].symlink_to(directory / "gone.png")
    made["a symbolic link loop"].symlink_to(made["a symbolic link loop"])
    os.mkfifo(made["a FIFO"])
    return made


@pytest.mark.parametrize("kind", ["a broken symbolic link", "a symbolic link loop", "a FIFO"])
def test_folder_entries_that_are_not_regular_files_are_bad_images(tmp_path, capsys, kind):
    """Not left out without a word (nor opened: a FIFO would block): named, or skipped and counted."""
    folder = _make_folder(tmp_path / "d", per_class=3)
    specials = _specials(folder / "cat")
    for name, path in specials.items():
        if name != kind:
            path.unlink()
    with pytest.raises(DataError, match=rf"{specials[kind].name}: {kind}"):
        data.validate(f"folder:{folder}")
    data.validate(f"folder:{folder}", on_bad_image="skip")
    err = capsys.readouterr().err
    assert "skipping 1 image(s)" in err and f"{specials[kind].name}: {kind}" in err
    images, _ = _examples(f"folder:{folder}", "train", on_bad_image="skip")
    assert len(images) == 6


def test_verify_images_names_special_files_without_opening_them(tmp_path):
    from inputs import images
    found = dict(images.verify_images([str(p) for p in _specials(tmp_path).values()]))
    assert sorted(found.values()) == ["a FIFO (named pipe), not a regular file",
                                      f"a broken symbolic link (to {tmp_path / 'gone.png'})", "a symbolic link loop"]


def test_load_center_crop_names_every_undecodable_file(tmp_path, monkeypatch):
    """PIL raises OSError, UnidentifiedImageError, SyntaxError, ValueError, DecompressionBombError, …: each is one
    DataError line naming the file (demo --images turns it into one ConfigError line)."""
    from PIL import Image

    from inputs.images import load_center_crop
    from workflows.demo import load_images
    folder = _make_folder(tmp_path / "d", per_class=1)
    bad = {**_damage(folder), **{k: v for k, v in _specials(tmp_path / "s").items()}}
    (tmp_path / "html.png").write_text("<html>404</html>")
    bad["not an image"] = tmp_path / "html.png"
    Image.new("L", (300, 200)).save(tmp_path / "bomb.png")
    bad["bomb"] = tmp_path / "bomb.png"
    (tmp_path / "dir.png").mkdir()
    bad["a directory"] = tmp_path / "dir.png"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 60,000 > 2× the limit: DecompressionBombError
    for what, path in bad.items():
        with pytest.raises(DataError) as info:
            load_center_crop(str(path), 16)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, (what, message)
        assert what not in ("a FIFO", "a directory") or "not a regular file" in message
        assert what != "bomb" or "DecompressionBombError" in message
        if what != "a directory":  # --images=DIR lists its files
            with pytest.raises(ConfigError) as info:
                load_images([str(path)], 16)
            assert str(info.value).startswith(f"--images: {path}: ")
    with pytest.raises(ConfigError, match="broken.png: a broken symbolic link"):
        load_images([str(tmp_path / "s")], 16)  # a directory's bad entries are named, not passed over
    # between the limit and twice it PIL only warns and loads: a large photo is legitimate, read silently
    Image.new("L", (150, 200)).save(tmp_path / "large.png")  # 30,000 pixels: 1.5× the limit
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_center_crop(str(tmp_path / "large.png"), 16).shape == (16, 16, 3)


def test_wide_images_scale_to_8_bit_like_tensorflow(tmp_path):
    """A 16-bit grayscale PNG (PIL mode I;16) reads the same through PIL (demo) and TensorFlow (folder:), not as
    solid white; 32-bit integer and float images follow tf.image.convert_image_dtype."""
    from PIL import Image

    from inputs.images import load_center_crop, to_rgb8
    gradient = (np.arange(64 * 64).reshape(64, 64) * 16 + 7).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode == "I;16"
    pil = load_center_crop(str(path), 64)
    tf_pixels = data._decode_file(tf.constant(str(path))).numpy()
    assert np.abs(pil - tf_pixels).max() <= 1 and pil.min() == 0 and pil.max() >= 254
    wide = np.linspace(-2**31, 2**31 - 1, 64 * 64).reshape(64, 64).astype(np.int32)
    want = tf.image.convert_image_dtype(tf.constant(np.clip(wide, 0, None)[..., None]), tf.uint8).numpy()[..., 0]
    assert np.abs(np.asarray(to_rgb8(Image.fromarray(wide, "I")))[..., 0].astype(int) - want).max() <= 1
    floats = np.linspace(-0.5, 1.5, 64 * 64).reshape(64, 64).astype(np.float32)
    want = tf.image.convert_image_dtype(tf.constant(np.clip(floats, 0, 1)[..., None]), tf.uint8).numpy()[..., 0]
    got = np.asarray(to_rgb8(Image.fromarray(floats, "F")))
    assert got.shape == (64, 64, 3) and np.abs(got[..., 1].astype(int) - want).max() <= 1
