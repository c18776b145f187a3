"""Input pipelines (tf.data) for training, search and evaluation recipes.

A dataset is named by one string:

- ``shapes`` — a built-in synthetic set: ten classes of simple coloured shapes (`SHAPES_CLASSES`) on noisy
  backgrounds, generated with numpy at the requested size (no download, no files). Its contents are fixed
  (`SHAPES_SEED`); `shapes` and `shapes_boxes` expose the generator, the latter with 1–3 boxed shapes per image
  for detection.
- ``folder:PATH`` — class-per-folder images, ``PATH/<class>/*.{png,jpg,jpeg,bmp,gif}``; class names sorted
  alphabetically are the label ids. When PATH holds ``train/`` and ``test/`` (or ``val/``, ``validation/``), the
  split picks one of them (``test``, ``val`` and ``validation`` are aliases); otherwise PATH is the training split.
- ``tsv:PATH`` — a labelled file list: ``PATH/labels.tsv`` (or PATH itself, a ``.tsv``) with a header and the
  columns ``file`` (relative to the list's folder) and ``label`` (integer class id), optionally ``synset``: the form
  of ``../shared/data/imagenet_sample``. With ImageNet synsets and ids below 1000 the classes are the 1000 ImageNet
  names (`zoo.imagenet_labels`, their standard order), otherwise ``0 … max id``. Split ``test`` (aliases ``val``,
  ``validation``) is a fixed evaluation part of `TSV_EVAL_IMAGES` files (those with the smallest SHA-1 of their
  file name: stable when rows are added or reordered), split ``train`` the rest: the evaluation files never enter
  training. ImageNet ids are checked against the synsets' standard order.
- any other name — a tensorflow-datasets name such as ``cifar10`` (``tfds.load(..., as_supervised=True)``; the
  split string goes to tfds as given). Without internet it must already be prepared under ``data_dir``.

Holdout: with ``holdout > 0`` the training data is split in two disjoint parts, split ``train`` (the 1 − holdout
part) and split ``holdout`` (the held-out part), for architecture-parameter training (meta-kernel α) or candidate
evaluation (SPOS). For in-memory sources (shapes, folder) the examples are put in a fixed pseudo-random order
(`PARTITION_SEED`, independent of the ``seed`` argument, so every caller sees the same partition) and the last
``round(holdout · N)`` of them are the holdout part; tensorflow-datasets splits are already shuffled when prepared,
so there the last examples in file order are. ``limit`` then keeps the first examples of the part.

Elements are ``(images, labels)``: float32 raw 0–255 RGB of shape (B, size, size, 3) — models normalise inside —
and int32 labels (B,). `validate` checks a dataset name without importing TensorFlow.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import TYPE_CHECKING, Callable

import numpy as np

from common.errors import DataError, InputError  # noqa: F401 — DataError re-exported (its old home)
from common.io import eprint
from inputs.images import BAD_IMAGE_POLICIES, file_problem, list_image_files, verify_images
from inputs.shapes import SHAPES_CLASSES, SHAPES_SEED, SHAPES_SIZES, shapes_boxes  # noqa: F401 — re-exported
from inputs.shapes import rendered as _shapes_cached
from models.spec import MAX_CLASSES

if TYPE_CHECKING:
    import tensorflow as tf

PARTITION_SEED = 20240601
SHUFFLE_BUFFER = 10_000
AUGMENTS = ("standard", "paper", "none")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
EVAL_SPLITS = ("test", "val", "validation")
TSV_EVAL_IMAGES = 300  # the fixed evaluation split of a tsv: list (ImageNet sample: 300 of its 1,000 images)
RANDOM_RESIZED_CROP_MIN_SIZE = 64  # below this, CIFAR-style pad-and-crop
BRIGHTNESS_DELTA = 0.2  # additive, on the 0–1 scale
SATURATION_RANGE = (0.6, 1.4)
HUE_DELTA = 0.05

_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a")
TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[A-Za-z0-9_.-]+)?(:[0-9.*]+)?")
_SHAPES_SPLITS = {"train": "train", "holdout": "train", "test": "test", "val": "test", "validation": "test"}


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a loaded split holds."""
    name: str
    num_classes: int
    class_names: tuple[str, ...]
    num_examples: int
    image_size: int


@dataclasses.dataclass(frozen=True)
class _Source:
    """Undecoded examples of one split: ``decode`` turns an element's first item into a uint8 (H, W, 3) image."""
    examples: "tf.data.Dataset"
    decode: Callable
    class_names: tuple[str, ...]
    num_examples: int


# ---------------------------------------------------------------------------------------------------------------
# Public API


def validate(dataset: str, data_dir: str | None = None, on_bad_image: str = "raise") -> None:
    """Checks a dataset without importing TensorFlow.

    ``folder:PATH`` is scanned in full: class folders, image files, and every image decoded once (cached by size and
    modification time, `inputs.images.verify_images`); an image that cannot be decoded raises naming it, or with
    ``on_bad_image="skip"`` is left out with one warning line. A tensorflow-datasets name is only checked for its form.

    Raises:
        DataError: the name or the data it points to is unusable.
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise DataError(f"--on_bad_image={on_bad_image}: one of {', '.join(BAD_IMAGE_POLICIES)}")
    if dataset == "shapes":
        return
    if dataset.startswith("folder:"):
        root = _folder_root(dataset)
        layout = _folder_layout(root)
        for split in {directory: split for split, directory in layout.items()}.values():
            _folder_examples(root, layout, split, on_bad_image)
        return
    if dataset.startswith("tsv:"):
        _tsv_examples(dataset, on_bad_image)
        return
    if not TFDS_NAME.fullmatch(dataset):
        raise DataError(f"dataset {dataset!r}: not 'shapes', 'folder:PATH', 'tsv:PATH' or a tensorflow-datasets name")
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir}: not a directory")


def known_classes(dataset: str) -> int | None:
    """Number of classes of a dataset when it can be known without TensorFlow (shapes, folder:PATH), else None."""
    if dataset == "shapes":
        return len(SHAPES_CLASSES)
    if dataset.startswith("folder:"):
        root = _folder_root(dataset)
        return len(_class_names(_folder_layout(root)["train"]))
    if dataset.startswith("tsv:"):
        return len(_tsv_table(dataset)[0])
    return None


def known_class_names(dataset: str) -> tuple[str, ...] | None:
    """Class names of a dataset when they can be known without TensorFlow (shapes, folder:PATH, tsv:PATH), else
    None; a tsv list without synsets has its ids as names."""
    if dataset == "shapes":
        return tuple(SHAPES_CLASSES)
    if dataset.startswith("folder:"):
        return tuple(_class_names(_folder_layout(_folder_root(dataset))["train"]))
    if dataset.startswith("tsv:"):
        return tuple(_tsv_table(dataset)[0])
    return None


def check_eval_split(dataset: str, hint: str) -> None:
    """A ``folder:PATH`` dataset without ``test/`` (or ``val/``) cannot give validation data: say so (ending with
    ``hint``, what the user can do) before TensorFlow is imported."""
    if dataset.startswith("folder:"):
        root = _folder_root(dataset)
        if "test" not in _folder_layout(root):
            raise InputError(f"--dataset={dataset}: no test split (needs {root}/train and {root}/test or val); "
                             f"{hint}")


def load(dataset: str, split: str, *, image_size: int, batch_size: int, training: bool, data_dir: str | None = None,
         seed: int = 0, augment: str = "standard", holdout: float = 0.0, drop_remainder: bool | None = None,
         repeat: bool = False, limit: int | None = None,
         on_bad_image: str = "raise") -> tuple["tf.data.Dataset", DataInfo]:
    """A batched, prefetched dataset of one split and what it holds.

    Args:
        dataset: ``shapes``, ``folder:PATH`` or a tensorflow-datasets name (module docstring).
        split: ``train``, ``test`` (aliases ``val``, ``validation``) or, with ``holdout > 0``, ``holdout``;
            tensorflow-datasets names accept any tfds split string.
        image_size: output height and width.
        batch_size: examples per batch.
        training: shuffle (seeded) and augment.
        data_dir: tensorflow-datasets data directory.
        seed: seed of the shuffle and the augmentation.
        augment: with ``training``, ``standard`` (random crop — padded for inputs under 64 px, random-resized above
            — and horizontal flip), ``paper`` (standard plus brightness/saturation/hue jitter) or ``none``.
        holdout: fraction of the training data held out as split ``holdout`` (0 ≤ holdout < 1).
        drop_remainder: drop a last partial batch; defaults to ``training``.
        repeat: repeat forever.
        limit: keep only the first ``limit`` examples of the split (after the fixed permutation).
        on_bad_image: ``folder:PATH`` images that cannot be decoded: ``raise`` (a DataError naming the file) or
            ``skip`` (left out, one warning line).

    Returns:
        ``(dataset, info)``; elements are float32 (B, image_size, image_size, 3) raw 0–255 RGB and int32 (B,).

    Raises:
        DataError: bad arguments or unusable data.
    """
    _check_args(split, image_size, batch_size, augment, holdout, limit)
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise DataError(f"on_bad_image={on_bad_image!r}: one of {', '.join(BAD_IMAGE_POLICIES)}")
    drop = training if drop_remainder is None else drop_remainder
    if dataset == "shapes":
        source = _shapes_source(split, image_size, holdout, limit)
    elif dataset.startswith("folder:"):
        source = _folder_source(dataset, split, holdout, limit, on_bad_image)
    elif dataset.startswith("tsv:"):
        source = _tsv_source(dataset, split, holdout, limit, on_bad_image)
    else:
        validate(dataset, data_dir)
        from inputs.tfds_source import tfds_source  # tensorflow-datasets names (a module of their own)
        source = tfds_source(dataset, split, holdout, limit, data_dir)
    if drop and not repeat and source.num_examples < batch_size:
        raise DataError(f"{dataset} split {split!r}: {source.num_examples} examples, fewer than one batch of "
                        f"{batch_size} with drop_remainder")
    info = DataInfo(dataset, len(source.class_names), source.class_names, source.num_examples, image_size)
    return _pipeline(source, image_size, batch_size, training, seed, augment, drop, repeat), info


def shapes(split: str, image_size: int, seed: int = SHAPES_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic classification set: uint8 (N, size, size, 3) images and int32 (N,) labels.

    One shape per image (its class in `SHAPES_CLASSES`, balanced) of random position, size and colour on a noisy
    background. Deterministic in (split, seed); the scene does not depend on ``image_size``, only its rendering.
    Arrays are cached and read-only.
    """
    if split not in SHAPES_SIZES:
        raise DataError(f"shapes: no split {split!r} (have {', '.join(SHAPES_SIZES)})")
    return _shapes_cached(split, image_size, seed)


# ---------------------------------------------------------------------------------------------------------------
# Sources: the examples of one split, before shuffling and decoding


def _check_args(split: str, image_size: int, batch_size: int, augment: str, holdout: float,
                limit: int | None) -> None:
    if image_size < 8:
        raise DataError(f"image_size must be at least 8, got {image_size}")
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    if augment not in AUGMENTS:
        raise DataError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if not 0.0 <= holdout < 1.0:
        raise DataError(f"holdout must be in [0, 1), got {holdout}")
    if split == "holdout" and holdout == 0.0:
        raise DataError("split 'holdout' needs holdout > 0")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be positive, got {limit}")


def _select(n: int, split: str, holdout: float, limit: int | None, where: str) -> np.ndarray:
    """Indices of a split's examples: fixed permutation, holdout partition of the training data, then limit."""
    order = np.random.default_rng(PARTITION_SEED).permutation(n)
    if holdout > 0.0 and split in ("train", "holdout"):
        n_train = n - _holdout_count(n, holdout, where)
        order = order[n_train:] if split == "holdout" else order[:n_train]
    return order[:limit]


def _holdout_count(n: int, holdout: float, where: str) -> int:
    count = round(holdout * n)
    if not 0 < count < n:
        raise DataError(f"{where}: holdout {holdout} of {n} training examples leaves an empty part")
    return count


def _shapes_source(split: str, image_size: int, holdout: float, limit: int | None) -> _Source:
    import tensorflow as tf
    if split not in _SHAPES_SPLITS:
        raise DataError(f"shapes: no split {split!r} (have {', '.join(_SHAPES_SPLITS)})")
    images, labels = shapes(_SHAPES_SPLITS[split], image_size)
    idx = _select(len(labels), split, holdout, limit, "shapes")
    return _Source(tf.data.Dataset.from_tensor_slices((images[idx], labels[idx])), tf.identity, SHAPES_CLASSES,
                   len(idx))


def _folder_root(dataset: str) -> str:
    root = os.path.expanduser(dataset[len("folder:"):])
    if not root:
        raise DataError(f"dataset {dataset!r}: folder: needs a path")
    if not os.path.isdir(root):
        raise DataError(f"folder:{root}: " + ("not a directory" if os.path.exists(root) else "no such directory"))
    return root


def _folder_layout(root: str) -> dict[str, str]:
    """The directory of each split name: ``root/train`` and ``root/test|val|validation`` when present, else root."""
    evals = [d for d in EVAL_SPLITS if os.path.isdir(os.path.join(root, d))]
    train = os.path.join(root, "train")
    if os.path.isdir(train) and not evals and _holds_class_folders(train):
        return {"train": train}  # a split layout without its test/ split (not a class named "train")
    if evals and not os.path.isdir(train) and _holds_class_folders(os.path.join(root, evals[0])):
        raise DataError(f"folder:{root}: has {evals[0]}/ but no train/ directory beside it")
    if not (os.path.isdir(train) and evals):
        return {"train": root}
    layout = {"train": os.path.join(root, "train")}
    layout.update({s: os.path.join(root, s if s in evals else evals[0]) for s in EVAL_SPLITS})
    return layout


def _holds_class_folders(directory: str) -> bool:
    """Whether ``directory`` has subfolders and no images of its own: a split folder, not a class folder."""
    entries = [e for e in os.scandir(directory) if not e.name.startswith(".")]
    return any(e.is_dir() for e in entries) and not any(
        e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)


def _class_names(directory: str) -> list[str]:
    names = sorted(d for d in os.listdir(directory) if not d.startswith(".")
                   and os.path.isdir(os.path.join(directory, d)))
    if not names:
        raise DataError(f"{directory}: no class subfolders (expected {directory}/<class>/*.png|jpg|…)")
    return names


_WARNED: set = set()  # (directory, count) already reported as skipped in this process


def _folder_examples(root: str, layout: dict[str, str], split: str,
                     on_bad_image: str = "raise") -> tuple[tuple[str, ...], list[str], list[int]]:
    """Class names (of the training directory) and the split's files with their labels; every image is decoded once
    (`inputs.images.verify_images`, cached): a bad one raises naming it, or with ``on_bad_image="skip"`` is left out
    with one warning line."""
    base = "train" if split == "holdout" else split
    if base not in layout:
        raise DataError(f"folder:{root}: no {split!r} split (needs train/ and test/ or val/ subfolders; "
                        f"use holdout for validation data)")
    classes = _class_names(layout["train"])
    directory = layout[base]
    files, labels = [], []
    for name in _class_names(directory):
        if name not in classes:
            raise DataError(f"{os.path.join(directory, name)}: class {name!r} is not in {layout['train']}")
        found = [f for f in list_image_files([os.path.join(directory, name)]) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DataError(f"{os.path.join(directory, name)}: no images (*{', *'.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [classes.index(name)] * len(found)
    bad = []
    for f in files:
        try:
            _check_header(f)
        except DataError as e:
            if on_bad_image == "raise":
                raise
            bad.append((f, str(e).split(": ", 1)[-1]))
    not_images = {p for p, _ in bad}
    bad += verify_images([f for f in files if f not in not_images])
    files, labels = _drop_bad(bad, files, labels, directory, on_bad_image)
    return tuple(classes), files, labels


def _drop_bad(bad, files: list, labels: list, where: str, on_bad_image: str) -> tuple[list, list]:
    """``files``/``labels`` without the ``bad`` ``(path, reason)`` images: with ``raise`` a DataError naming the
    first, with ``skip`` one warning line per (place, count) and the rest kept (at least one must remain)."""
    if not bad:
        return files, labels
    if on_bad_image == "raise":
        path, reason = bad[0]
        more = f" (and {len(bad) - 1} more in {where})" if len(bad) > 1 else ""
        raise DataError(f"{path}: not a decodable image ({reason}){more}; repair or remove it, or pass "
                        "--on_bad_image=skip")
    drop = {path for path, _ in bad}
    kept = [(f, y) for f, y in zip(files, labels) if f not in drop]
    if not kept:
        raise DataError(f"{where}: none of its {len(files)} images can be decoded (first: {bad[0][0]})")
    if (where, len(bad)) not in _WARNED:
        _WARNED.add((where, len(bad)))
        eprint(f"{where}: skipping {len(bad)} image(s) that cannot be decoded (first: {bad[0][0]}: {bad[0][1]})")
    return [f for f, _ in kept], [y for _, y in kept]


def _check_header(path: str) -> None:
    """Rejects a file that does not start like a PNG, JPEG, BMP or GIF (decoding it later would fail mid-epoch), and
    an entry that is not a regular file: a broken or looping symbolic link, a FIFO (reading it would block), …"""
    problem = file_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not head.startswith(_MAGIC):
        raise DataError(f"{path}: not a PNG, JPEG, BMP or GIF image (corrupt or mislabelled file)")


def _folder_source(dataset: str, split: str, holdout: float, limit: int | None, on_bad_image: str) -> _Source:
    import tensorflow as tf
    root = _folder_root(dataset)
    classes, files, labels = _folder_examples(root, _folder_layout(root), split, on_bad_image)
    idx = _select(len(files), split, holdout, limit, dataset)
    examples = tf.data.Dataset.from_tensor_slices((np.asarray(files)[idx], np.asarray(labels, np.int32)[idx]))
    return _Source(examples, _decode_file, classes, len(idx))


def _tsv_path(dataset: str) -> str:
    path = os.path.expanduser(dataset[len("tsv:"):])
    if not path:
        raise DataError(f"dataset {dataset!r}: tsv: needs a path")
    table = os.path.join(path, "labels.tsv") if os.path.isdir(path) else path
    if not os.path.isfile(table):
        raise DataError(f"{dataset}: no such file {table}")
    return table


@functools.lru_cache(maxsize=4)
def _tsv_table_cached(table: str, mtime: float) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    import csv
    try:
        with open(table, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{table}: cannot read ({e})") from None
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise DataError(f"{table}: the first line must name the columns, with 'file' and 'label' among them")
    head = rows[0]
    i_file, i_label = head.index("file"), head.index("label")
    i_syn = head.index("synset") if "synset" in head else None
    base = os.path.dirname(os.path.abspath(table))
    files, labels, synsets = [], [], []
    seen: dict[str, tuple[int, int]] = {}  # path → (line, index) of its first row
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(head):
            raise DataError(f"{table}, line {n}: {len(row)} columns, the header has {len(head)}")
        try:
            label = int(row[i_label])
            if not 0 <= label < MAX_CLASSES:
                raise ValueError
        except ValueError:
            raise DataError(f"{table}, line {n}: label {row[i_label]!r} is not a class id (an integer from 0 to "
                            f"{MAX_CLASSES - 1})") from None
        path = os.path.normpath(os.path.join(base, row[i_file]))
        if not os.path.lexists(path):
            raise DataError(f"{table}, line {n}: no such file {path}")
        problem = file_problem(path)  # a broken or looping link, a FIFO, a directory, …
        if problem:
            raise DataError(f"{table}, line {n}: {path}: {problem}")
        if path in seen and labels[seen[path][1]] != label:
            raise DataError(f"{table}, line {n}: {row[i_file]} is labelled {label} here and "
                            f"{labels[seen[path][1]]} on line {seen[path][0]}")
        seen.setdefault(path, (n, len(files)))
        files.append(path)
        labels.append(label)
        if i_syn is not None:
            synsets.append(row[i_syn])
    if len(files) <= TSV_EVAL_IMAGES:
        raise DataError(f"{table}: {len(files)} files; needs more than the {TSV_EVAL_IMAGES} of its evaluation split")
    if synsets and max(labels) < 1000 and all(re.fullmatch(r"n\d{8}", s) for s in synsets):
        from zoo import imagenet_labels
        names = tuple(imagenet_labels())
        order = _imagenet_wnids()
        if order:  # the standard id of a synset is its rank among the 1000 sorted wnids
            index = {w: i for i, w in enumerate(order)}
            for n, (syn, label) in enumerate(zip(synsets, labels), start=2):
                if index.get(syn, -1) != label:
                    raise DataError(f"{table}: row {n - 1}: label {label} but synset {syn} is ImageNet class "
                                    f"{index.get(syn, 'none')} (ids must be the standard 0–999 order)")
    else:
        names = tuple(str(i) for i in range(max(labels) + 1))
    return names, tuple(files), tuple(labels)


@functools.lru_cache(maxsize=1)
def _imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synsets in standard (sorted) order, from the pinned tensorflow-datasets package's data
    (read as a file: no import); () if it is not there."""
    import importlib.util
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        return ()
    path = os.path.join(spec.submodule_search_locations[0], "image_classification", "imagenet_resized_labels.txt")
    try:
        with open(path, encoding="utf-8") as f:
            wnids = sorted({line.strip() for line in f if line.strip()})
    except OSError:
        return ()
    return tuple(wnids) if len(wnids) == 1000 else ()


def _tsv_table(dataset: str):
    """(class names, files, labels) of a ``tsv:`` dataset, checked (cached per file version)."""
    table = _tsv_path(dataset)
    return _tsv_table_cached(table, os.path.getmtime(table))


def _tsv_examples(dataset: str, on_bad_image: str = "raise") -> tuple[tuple[str, ...], list[str], list[int]]:
    """Every listed image decoded once (`inputs.images.verify_images`, cached); bad ones raise or are skipped."""
    names, files, labels = _tsv_table(dataset)
    files, labels = _drop_bad(verify_images(list(files)), list(files), list(labels), dataset, on_bad_image)
    return names, files, labels


def _tsv_evaluation(files) -> set[str]:
    """The evaluation part of a list: the `TSV_EVAL_IMAGES` files with the smallest SHA-1 of their base name. It
    depends on nothing but the names, so it stays put when rows are added, removed or reordered."""
    import hashlib
    ranked = sorted(files, key=lambda f: hashlib.sha1(os.path.basename(f).encode()).hexdigest())
    return set(ranked[:TSV_EVAL_IMAGES])


def _tsv_source(dataset: str, split: str, holdout: float, limit: int | None, on_bad_image: str) -> _Source:
    """The evaluation part (`_tsv_evaluation`, decided on the whole list before any image is skipped) or the training
    rest, then the usual holdout/limit selection within it."""
    import tensorflow as tf
    names, all_files, _ = _tsv_table(dataset)
    kept_names, files, labels = _tsv_examples(dataset, on_bad_image)
    evaluation = _tsv_evaluation(all_files)
    base = "test" if split in EVAL_SPLITS else "train"
    if split not in EVAL_SPLITS + ("train", "holdout"):
        raise DataError(f"{dataset}: no split {split!r} (train, test, or holdout with holdout > 0)")
    part = [(f, y) for f, y in zip(files, labels) if (f in evaluation) == (base == "test")]
    idx = _select(len(part), split, holdout, limit, dataset)
    examples = tf.data.Dataset.from_tensor_slices((np.asarray([part[i][0] for i in idx]),
                                                   np.asarray([part[i][1] for i in idx], np.int32)))
    return _Source(examples, _decode_file, kept_names, len(idx))


def _decode_file(path: "tf.Tensor") -> "tf.Tensor":
    import tensorflow as tf
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# ---------------------------------------------------------------------------------------------------------------
# Pipeline and image transforms (TensorFlow)


def _pipeline(source: _Source, size: int, batch_size: int, training: bool, seed: int, augment: str, drop: bool,
              repeat: bool) -> "tf.data.Dataset":
    import tensorflow as tf
    ds = source.examples
    if training:
        ds = ds.shuffle(min(source.num_examples, SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if training and augment != "none":
        # Stateless ops with a per-element seed stream: reproducible under a parallel map, new draws every epoch.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda example, s: (_augment(source.decode(example[0]), size, augment, s), tf.cast(example[1], tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, label: (_fit(source.decode(x), size), tf.cast(label, tf.int32)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)


def _fit(image: "tf.Tensor", size: int) -> "tf.Tensor":
    """float32 (size, size, 3): shorter side resized to ``size`` (bilinear), then centre-cropped.

    Images already of that size skip the resize: antialiased resizing costs ~5x the PNG decode of a CIFAR image.
    """
    import tensorflow as tf
    fits = tf.reduce_all(tf.shape(image)[:2] == size)
    image = tf.cond(fits, lambda: tf.cast(image, tf.float32), lambda: _resize_centre_crop(image, size))
    return tf.ensure_shape(image, [size, size, 3])


def _resize_centre_crop(image: "tf.Tensor", size: int) -> "tf.Tensor":
    import tensorflow as tf
    shape = tf.shape(image)
    scale = size / tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    new_shape = tf.maximum(size, tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32))
    image = tf.image.resize(image, new_shape, method="bilinear", antialias=True)
    top, left = (new_shape[0] - size) // 2, (new_shape[1] - size) // 2
    return image[top:top + size, left:left + size]


def _augment(image: "tf.Tensor", size: int, augment: str, seed: "tf.Tensor") -> "tf.Tensor":
    """Random crop and flip (and colour jitter for ``paper``) of a uint8 image; float32 0–255 (size, size, 3)."""
    import tensorflow as tf
    crop_seed, flip_seed, *colour_seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    if size < RANDOM_RESIZED_CROP_MIN_SIZE:
        pad = size // 8
        padded = tf.pad(_fit(image, size), [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, [size, size, 3], crop_seed)
    else:
        image = _random_resized_crop(image, size, crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _colour_jitter(image, colour_seeds) if augment == "paper" else image


def _random_resized_crop(image: "tf.Tensor", size: int, seed: "tf.Tensor") -> "tf.Tensor":
    """Inception-style crop: 8–100% of the area, aspect ratio 3/4–4/3, resized to ``size`` (bilinear)."""
    import tensorflow as tf
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, extent)
    return tf.ensure_shape(tf.image.resize(crop, [size, size], method="bilinear", antialias=True), [size, size, 3])


def _colour_jitter(image: "tf.Tensor", seeds: list) -> "tf.Tensor":
    """Brightness, saturation and hue jitter (metaKernel §4.1), on the 0–1 scale, clipped, back to 0–255."""
    import tensorflow as tf
    x = image / 255.0
    x = tf.image.stateless_random_brightness(x, BRIGHTNESS_DELTA, seeds[0])
    x = tf.image.stateless_random_saturation(x, *SATURATION_RANGE, seeds[1])
    x = tf.image.stateless_random_hue(x, HUE_DELTA, seeds[2])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0
