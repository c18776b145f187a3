"""Detection data: records from VOC XML, tensorflow-datasets or the synthetic ``shapes`` set; their tf.data pipeline.

A detection dataset is named by one string:

- ``shapes`` — synthetic boxes (`inputs.classification.shapes_boxes`) at `SHAPES_IMAGE_SIZE` pixels, `SHAPES_SPLITS`
  images per split (a different seed per split), classes `inputs.classification.SHAPES_CLASSES`; images are held in
  memory.
- ``voc:PATH`` — PASCAL VOC layout: ``PATH/ImageSets/Main/{split}.txt`` lists image ids, ``Annotations/{id}.xml``
  holds the boxes and ``JPEGImages/`` the image named by the XML's ``<filename>`` (else ``{id}`` + .jpg/.jpeg/.png).
- a tensorflow-datasets name such as ``voc/2007`` (any dataset with an ``image`` feature and ``objects`` holding
  ``bbox``, ``label`` and ``is_difficult``). No download is attempted: it must already be prepared under ``data_dir``.
  Its images are decoded into memory (VOC 2007 trainval: about 2.8 GB).

Coordinates everywhere are continuous pixels ``(x0, y0, x1, y1)`` with x1/y1 exclusive: VOC's 1-based inclusive
``xmin..xmax`` becomes ``x0 = xmin − 1, x1 = xmax`` (likewise y); ``xmin == xmax`` (or ``ymin == ymax``) is a bad
annotation (``on_error``), not a one-pixel box. Record boxes are in ORIGINAL image pixels;
`detection_dataset` yields them in network-input pixels (after the `models.letterbox` transform, or its randomly
scaled and placed variant in training).

`validate_detection` and `load_records` do not import TensorFlow (``voc:`` and ``shapes``).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from inputs.classification import SHAPES_CLASSES, TFDS_NAME, DataError, shapes_boxes
from inputs.images import file_problem, verify_images

if TYPE_CHECKING:
    import tensorflow as tf

SHAPES_SPLITS = {"train": 256, "val": 64}
SHAPES_SEEDS = {"train": 0, "val": 1}
SHAPES_IMAGE_SIZE = 160
VOC_SUBDIRS = ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main"))
BOX_TOLERANCE = 1.0  # pixels a VOC box may reach beyond the image (then clipped)
SCALE_JITTER = (0.7, 1.3)  # training: letterbox scale multiplied by a uniform draw from this range
MIN_VISIBLE = 0.25  # training: a box keeps at least this fraction of its area inside the input, else dropped
MIN_SIZE = 2.0  # training: boxes narrower or lower than this (input pixels) after clipping are dropped
SHUFFLE_BUFFER = 10_000
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a VOC split list's name: a file name, never a path


@dataclasses.dataclass(frozen=True)
class Record:
    """One annotated image.

    ``image`` is a file path (decoded in the pipeline) or a uint8 (height, width, 3) array. ``boxes`` float32 (N, 4)
    ``x0, y0, x1, y1`` in original pixels (x1/y1 exclusive), ``labels`` int32 (N,) indices into the class names,
    ``difficult`` bool (N,) (VOC ``<difficult>``: ignored by the evaluation, dropped in training by default).
    """
    image: str | np.ndarray
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    id: str


# ---------------------------------------------------------------------------------------------------------------
# Names and records (no TensorFlow for shapes and voc:)


def validate_detection(dataset: str) -> None:
    """Checks a detection dataset name cheaply, without importing TensorFlow.

    Raises:
        DataError (an InputError): not ``shapes``, an existing ``voc:PATH`` layout or a tensorflow-datasets name.
    """
    if dataset == "shapes":
        return
    if dataset.startswith("voc:"):
        _voc_root(dataset)
        return
    if not TFDS_NAME.fullmatch(dataset):
        raise DataError(f"dataset {dataset!r}: not 'shapes', 'voc:PATH' or a tensorflow-datasets name "
                        f"(such as 'voc/2007')")


def check_split(dataset: str, split: str, flag: str = "split") -> None:
    """Checks that a detection dataset has the split ``split``, without importing TensorFlow.

    ``shapes``: one of `SHAPES_SPLITS`. ``voc:PATH``: a plain name (letters, digits, ``_``, ``-``, ``.``; no path)
    whose list ``ImageSets/Main/{split}.txt`` exists. tensorflow-datasets names: not empty (the split itself is
    checked when it is loaded).

    Args:
        dataset: the dataset name (see the module docstring).
        split: the split name.
        flag: how the user names the split in messages (``--train_split``).

    Raises:
        DataError (an InputError): one line naming ``flag``, the value and, for VOC, the missing list file.
    """
    validate_detection(dataset)
    if dataset == "shapes":
        if split not in SHAPES_SPLITS:
            raise DataError(f"{flag}={split}: shapes has no split {split!r} (have {', '.join(SHAPES_SPLITS)})")
        return
    if dataset.startswith("voc:"):
        root = _voc_root(dataset)
        if not _SPLIT_NAME.fullmatch(split):
            raise DataError(f"{flag}={split!r}: not a VOC split name (letters, digits, '_', '-', '.'; the list "
                            f"{os.path.join(root, 'ImageSets', 'Main', '<split>.txt')})")
        path = _split_path(root, split)
        if not os.path.isfile(path):
            raise DataError(f"{flag}={split}: no split list {path} (have {_have_splits(root)})")
        return
    if not split.strip():
        raise DataError(f"{flag}: empty split name")


def load_records(dataset: str, split: str, *, class_names: list[str] | None = None, on_error: str = "raise",
                 data_dir: str | None = None) -> tuple[list[Record], list[str]]:
    """Reads one split of a detection dataset.

    Args:
        dataset: ``shapes``, ``voc:PATH`` or a tensorflow-datasets name (see the module docstring).
        split: ``train`` or ``val`` (``test``/``trainval`` too where the layout has them; any tfds split string).
        class_names: the label order to use — pass the training split's for every other split. When None: the sorted
            names in the annotations of *this* split (for VOC; other split lists are not read, so an extra name in a
            validation list can never add a class or renumber the labels: it is an unknown class there), the tfds
            label names, or `SHAPES_CLASSES`.
        on_error: ``raise`` — a DataError naming the file for malformed XML, a missing image, an image whose size
            disagrees with ``<size>``, a box outside the image (beyond `BOX_TOLERANCE`), empty (``xmax < xmin``) or
            of zero size (``xmin == xmax`` or ``ymin == ymax``), an unknown class name; ``skip`` — drop that object
            (or the whole file when it is unusable) and log one warning with counts.
        data_dir: tensorflow-datasets data directory.

    Returns:
        (records in split-list order, class names).
    """
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
    validate_detection(dataset)
    if dataset == "shapes":
        return _shapes_records(split, class_names)
    if dataset.startswith("voc:"):
        return _voc_records(_voc_root(dataset), split, class_names, on_error)
    return _tfds_records(dataset, split, class_names, on_error, data_dir)


def _shapes_records(split: str, class_names: list[str] | None) -> tuple[list[Record], list[str]]:
    if split not in SHAPES_SPLITS:
        raise DataError(f"shapes: no detection split {split!r} (have {', '.join(SHAPES_SPLITS)})")
    if class_names is not None and list(class_names) != list(SHAPES_CLASSES):
        raise DataError(f"shapes: class names must be {list(SHAPES_CLASSES)}, got {list(class_names)}")
    images, boxes = _shapes_cached(split)
    records = []
    for i, (image, objects) in enumerate(zip(images, boxes)):
        table = np.asarray(objects, np.float32).reshape(-1, 5)
        records.append(Record(image, SHAPES_IMAGE_SIZE, SHAPES_IMAGE_SIZE, table[:, 1:], table[:, 0].astype(np.int32),
                              np.zeros(len(table), bool), f"shapes-{split}-{i}"))
    return records, list(SHAPES_CLASSES)


@functools.lru_cache(maxsize=2)
def _shapes_cached(split: str):
    images, boxes = shapes_boxes(SHAPES_SPLITS[split], SHAPES_IMAGE_SIZE, SHAPES_SEEDS[split])
    images.setflags(write=False)
    return images, boxes


def _voc_root(dataset: str) -> str:
    root = dataset[len("voc:"):]
    if not root:
        raise DataError(f"dataset {dataset!r}: empty path after 'voc:'")
    if not os.path.isdir(root):
        raise DataError(f"{dataset}: {root} is not a directory")
    for sub in VOC_SUBDIRS:
        if not os.path.isdir(os.path.join(root, sub)):
            raise DataError(f"{dataset}: no {os.path.join(root, sub)}/ (VOC layout: JPEGImages/, Annotations/, "
                            f"ImageSets/Main/)")
    return root


def _split_path(root: str, split: str) -> str:
    return os.path.join(root, "ImageSets", "Main", f"{split}.txt")


def _have_splits(root: str) -> str:
    """The split lists in ``ImageSets/Main`` (not the per-class ``{class}_{split}.txt`` ones), for messages."""
    directory = os.path.join(root, "ImageSets", "Main")
    have = sorted(f[:-4] for f in os.listdir(directory) if f.endswith(".txt") and "_" not in f)
    return ", ".join(have) or "none"


def _split_ids(root: str, split: str) -> list[str]:
    path = _split_path(root, split)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such split list (have {_have_splits(root)})")
    return [line.split()[0] for line in read_text(path).splitlines() if line.strip()]


def read_text(path: str) -> str:
    """A UTF-8 text file of the dataset (a leading byte-order mark is dropped).

    Raises:
        DataError (an InputError): one line naming the file: not UTF-8 (with the byte offset), not a regular file,
            unreadable.
    """
    problem = file_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 4]!r}…)") from None


def _parse_xml(path: str):
    """The root element of an annotation file, every tag and attribute name reduced to its local name (a VOC file
    written with ``xmlns="…"`` parses like a plain one). Raises _Bad naming the file."""
    problem = file_problem(path) if os.path.lexists(path) else None
    if problem:
        raise _Bad(f"{path}: {problem}")
    try:
        tree = ET.parse(path)
    except OSError as e:
        raise _Bad(f"{path}: cannot read ({e.strerror})") from None
    except ET.ParseError as e:
        raise _Bad(f"{path}: malformed XML ({e})") from None
    except (LookupError, ValueError) as e:  # an unknown or multi-byte encoding in the XML declaration
        raise _Bad(f"{path}: unreadable XML ({type(e).__name__}: {e})") from None
    root = tree.getroot()
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.rsplit("}", 1)[1]
        if any(k.startswith("{") for k in element.attrib):
            element.attrib = {k.rsplit("}", 1)[-1]: v for k, v in element.attrib.items()}
    return root


class _Bad(Exception):
    """A problem in one annotation file (or one of its objects, when raised by `_parse_object`)."""


def _voc_records(root: str, split: str, class_names: list[str] | None,
                 on_error: str) -> tuple[list[Record], list[str]]:
    ids = _split_ids(root, split)
    names = list(class_names) if class_names is not None else _voc_class_names(root, split)
    index = {name: i for i, name in enumerate(names)}
    records, skipped_files, skipped_objects, first = [], 0, 0, None
    for image_id in ids:
        xml_path = os.path.join(root, "Annotations", f"{image_id}.xml")
        try:
            record, bad_objects = _parse_voc(root, image_id, xml_path, index, on_error)
        except _Bad as e:
            if on_error == "raise":
                raise DataError(str(e)) from None
            skipped_files, first = skipped_files + 1, first or str(e)
            continue
        if bad_objects:
            skipped_objects, first = skipped_objects + len(bad_objects), first or bad_objects[0]
        records.append(record)
    broken = dict(verify_images([r.image for r in records]))  # decoded once (cached): truncated/corrupt pixels
    if broken:
        path, reason = next(iter(broken.items()))
        if on_error == "raise":
            raise DataError(f"{path}: not a decodable image ({reason})"
                            + (f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""))
        records = [r for r in records if r.image not in broken]
        skipped_files, first = skipped_files + len(broken), first or f"{path}: not a decodable image ({reason})"
    if skipped_files or skipped_objects:
        logging.warning("voc:%s split %s: skipped %d file(s) and %d object(s) with errors (first: %s)",
                        root, split, skipped_files, skipped_objects, first)
    if class_names is None:  # classes taken from this split: flag names too rare to be real classes (a typo?)
        counts = np.bincount(np.concatenate([r.labels for r in records] or [np.zeros(0, np.int32)]),
                             minlength=len(names))
        rare = [f"{names[i]!r} ({c})" for i, c in enumerate(counts) if c <= 0.01 * counts.sum()]
        if rare and counts.sum() >= 100:
            logging.warning("voc:%s split %s: class(es) %s have at most 1%% of the %d objects: a misspelt name "
                            "adds a class", root, split, ", ".join(rare), counts.sum())
    return records, names


def _voc_class_names(root: str, split: str) -> list[str]:
    """Sorted object names in the annotations of ``split`` (unreadable files are left to the loader to report)."""
    names, first_bad, bad = set(), None, 0
    for image_id in sorted(set(_split_ids(root, split))):
        try:
            ann = _parse_xml(os.path.join(root, "Annotations", f"{image_id}.xml"))
        except _Bad as e:
            first_bad, bad = first_bad or str(e), bad + 1
            continue
        names.update((o.findtext("name") or "").strip() for o in ann.iter("object"))
    names.discard("")
    if not names:  # nothing to name the classes by: say why when it is the files (not an empty split)
        why = f" ({bad} annotation file(s) unreadable, the first: {first_bad})" if bad else ""
        raise DataError(f"voc:{root}: no object names in the annotations of split {split!r}{why}")
    return sorted(names)


def _parse_voc(root: str, image_id: str, xml_path: str, index: dict[str, int],
               on_error: str) -> tuple[Record, list[str]]:
    """One annotation file → (record, messages of the objects dropped with on_error='skip'). Raises _Bad."""
    ann = _parse_xml(xml_path)
    image_path = _image_path(root, image_id, ann.findtext("filename"), xml_path)
    width, height = _image_size(image_path)
    xml_size = (ann.findtext("size/width"), ann.findtext("size/height"))
    try:
        xml_w, xml_h = (int(float(v)) for v in xml_size)
    except (TypeError, ValueError):
        xml_w = xml_h = 0  # absent or unreadable <size>: the image header decides
    if (xml_w, xml_h) != (0, 0) and (xml_w, xml_h) != (width, height):
        raise _Bad(f"{xml_path}: <size> {xml_w}x{xml_h} disagrees with {image_path} ({width}x{height})")
    boxes, labels, difficult, dropped = [], [], [], []
    for k, obj in enumerate(ann.iter("object")):
        try:
            box, label, hard = _parse_object(obj, k, xml_path, index, width, height)
        except _Bad as e:
            if on_error == "raise":
                raise
            dropped.append(str(e))
            continue
        boxes.append(box)
        labels.append(label)
        difficult.append(hard)
    record = Record(image_path, width, height, np.asarray(boxes, np.float32).reshape(-1, 4),
                    np.asarray(labels, np.int32), np.asarray(difficult, bool), image_id)
    return record, dropped


def _parse_object(obj, k: int, xml_path: str, index: dict[str, int], width: int,
                  height: int) -> tuple[list[float], int, bool]:
    where = f"{xml_path}: object {k}"
    name = (obj.findtext("name") or "").strip()
    if name not in index:
        raise _Bad(f"{where}: unknown class {name!r} (classes: {', '.join(index)})")
    try:
        hard = bool(int((obj.findtext("difficult") or "0").strip()))
        xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        if not np.isfinite([xmin, ymin, xmax, ymax]).all():
            raise ValueError("not finite")
    except (TypeError, ValueError):
        raise _Bad(f"{where}: missing or non-numeric <bndbox>/<difficult>") from None
    # xmin == xmax is a one-pixel-wide box in VOC's inclusive convention, in practice an annotation slip (a click,
    # not a drag) that used to be trained on as an object: a bad annotation, like an inverted box.
    if xmax == xmin or ymax == ymin:
        raise _Bad(f"{where}: zero-size box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}")
    if xmax < xmin or ymax < ymin:
        raise _Bad(f"{where}: empty box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}")
    x0, y0, x1, y1 = xmin - 1.0, ymin - 1.0, xmax, ymax
    t = BOX_TOLERANCE
    if x0 < -t or y0 < -t or x1 > width + t or y1 > height + t:
        raise _Bad(f"{where}: box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} outside the "
                   f"{width}x{height} image")
    box = [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(x1, width), min(y1, height)]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise _Bad(f"{where}: box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is empty inside the "
                   f"{width}x{height} image")
    return box, index[name], hard


def _image_path(root: str, image_id: str, filename: str | None, xml_path: str) -> str:
    directory = os.path.join(root, "JPEGImages")
    candidates = ([filename.strip()] if filename and filename.strip() else []) + [
        image_id + ext for ext in _IMAGE_EXTENSIONS]
    for name in candidates:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
        problem = file_problem(path) if os.path.lexists(path) else None
        if problem:  # a broken or looping link, a FIFO, …: named, not passed over for the next candidate
            raise _Bad(f"{xml_path}: image {path}: {problem}")
    raise _Bad(f"{xml_path}: no image {candidates[0]} in {directory}")


def _image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header (PIL, installed with matplotlib, reads only the header)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            if image.format not in ("JPEG", "PNG"):
                raise _Bad(f"{path}: {image.format} image, expected JPEG or PNG")
            return image.size
    except (OSError, UnidentifiedImageError):
        raise _Bad(f"{path}: not a readable JPEG or PNG image") from None


def _tfds_records(name: str, split: str, class_names: list[str] | None, on_error: str,
                  data_dir: str | None) -> tuple[list[Record], list[str]]:
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 — unknown name, bad version, broken data_dir: report them as one line
        raise DataError(f"dataset {name!r}: not a tensorflow-datasets name usable here ({_first_line(e)})") from None
    features = builder.info.features
    if not ("image" in features and "objects" in features
            and all(k in features["objects"] for k in ("bbox", "label", "is_difficult"))):
        raise DataError(f"{name}: not a detection dataset (needs 'image' and 'objects' with bbox, label, is_difficult)")
    if not builder.is_prepared():
        raise DataError(f"{name}: not prepared under {builder.data_dir} (no downloads here: prepare it with internet "
                        f"and pass --data_dir)")
    try:
        ds = builder.as_dataset(split=split)
    except Exception as e:  # noqa: BLE001 — e.g. an unknown split
        raise DataError(f"{name}: cannot load split {split!r} ({_first_line(e)})") from None
    source = list(features["objects"]["label"].names)
    names = list(class_names) if class_names is not None else source
    mapping = np.array([names.index(n) if n in names else -1 for n in source], np.int32)
    records, skipped = [], 0
    for i, ex in enumerate(tfds.as_numpy(ds)):
        image = ex["image"]
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        h, w = image.shape[:2]
        ymin, xmin, ymax, xmax = np.asarray(ex["objects"]["bbox"], np.float32).reshape(-1, 4).T
        labels = mapping[ex["objects"]["label"]]
        keep = labels >= 0
        if not keep.all():
            unknown = source[int(ex["objects"]["label"][~keep][0])]
            if on_error == "raise":
                raise DataError(f"{name} split {split!r} example {i}: class {unknown!r} not in {names}")
            skipped += int((~keep).sum())
        boxes = np.stack([xmin * w, ymin * h, xmax * w, ymax * h], axis=1)[keep]
        image_id = ex["image/filename"].decode() if "image/filename" in ex else f"{name}-{split}-{i}"
        records.append(Record(image[..., :3], w, h, boxes, labels[keep].astype(np.int32),
                              np.asarray(ex["objects"]["is_difficult"], bool)[keep], image_id))
    if skipped:
        logging.warning("%s split %s: skipped %d object(s) of classes not in %s", name, split, skipped, names)
    return records, names


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"


# ---------------------------------------------------------------------------------------------------------------
# tf.data pipeline


def detection_dataset(records: list[Record], class_names: list[str], *, input_size: int, batch_size: int,
                      training: bool, seed: int = 0, max_boxes: int = 50,
                      use_difficult: bool = False) -> "tf.data.Dataset":
    """Batches of ``(images, boxes, labels)`` for a detector taking raw 0–255 RGB ``input_size`` squares.

    ``images`` float32 (B, S, S, 3); ``boxes`` float32 (B, max_boxes, 4) ``x0, y0, x1, y1`` network-input pixels,
    zero rows for padding; ``labels`` int32 (B, max_boxes), −1 for padding. Boxes beyond ``max_boxes`` are dropped.

    training=True: reshuffled every epoch, then per image (stateless random ops; deterministic for ``seed``, new draws
    every epoch): horizontal flip with probability 1/2, and the letterbox scale multiplied by U(`SCALE_JITTER`) with
    the image placed at a uniformly random offset — padded with `models.letterbox.FILL` where it is smaller than the
    input, cropped where larger. Boxes follow the same transform, are clipped to the input and dropped when less than
    `MIN_VISIBLE` of their area stays inside or a side is under `MIN_SIZE` pixels. Difficult boxes are dropped unless
    ``use_difficult``. The last partial batch is dropped when there is at least one full batch.

    training=False: `models.letterbox.letterbox` only, records in order, last partial batch kept, every box (difficult
    included: the evaluation ignores those itself).
    """
    if not records:
        raise DataError("detection_dataset: no records")
    if input_size < 1 or batch_size < 1 or max_boxes < 1:
        raise DataError(f"detection_dataset: input_size={input_size}, batch_size={batch_size}, max_boxes={max_boxes} "
                        f"must be positive")
    for r in records:
        if len(r.labels) and (r.labels.min() < 0 or r.labels.max() >= len(class_names)):
            raise DataError(f"record {r.id}: label outside 0..{len(class_names) - 1}")
    import tensorflow as tf
    load = _loader(records)
    n_max = max(1, max(len(r.labels) for r in records))
    boxes = np.zeros((len(records), n_max, 4), np.float32)
    labels = np.full((len(records), n_max), -1, np.int32)
    difficult = np.zeros((len(records), n_max), bool)
    for i, r in enumerate(records):
        n = len(r.labels)
        boxes[i, :n], labels[i, :n], difficult[i, :n] = r.boxes, r.labels, r.difficult
    if training and not use_difficult:
        labels[difficult] = -1
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(records), dtype=np.int64), boxes, labels))
    if training:
        ds = ds.shuffle(min(len(records), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda example, s: _augment(load(example[0]), example[1], example[2], s, input_size, max_boxes),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda i, b, lab: _letterboxed(load(i), b, lab, input_size, max_boxes),
                    num_parallel_calls=tf.data.AUTOTUNE)
    drop = training and len(records) >= batch_size
    return ds.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)


def eval_arrays(records: list[Record], input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Letterboxed images float32 (N, S, S, 3) and their ``(scale, pad_x, pad_y)`` params float32 (N, 3), for mapping
    predictions back with `models.letterbox.from_input`. Holds every image in memory: for large sets iterate
    `detection_dataset` (training=False) and compute params with `models.letterbox.letterbox_params` instead."""
    import tensorflow as tf

    from models.letterbox import letterbox
    if not records:
        return np.zeros((0, input_size, input_size, 3), np.float32), np.zeros((0, 3), np.float32)
    load = _loader(records)
    ds = tf.data.Dataset.range(len(records)).map(lambda i: letterbox(load(i), input_size),
                                                 num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    images, params = zip(*ds.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(params)


def _loader(records: list[Record]):
    """A function: record index (int64 tensor) → its uint8 (H, W, 3) image tensor."""
    import tensorflow as tf
    if all(isinstance(r.image, str) for r in records):
        paths = tf.constant([r.image for r in records])

        def load(i):
            image = tf.io.decode_image(tf.io.read_file(tf.gather(paths, i)), channels=3, expand_animations=False)
            return tf.ensure_shape(image, [None, None, 3])
        return load
    if any(isinstance(r.image, str) for r in records):
        raise DataError("detection_dataset: records mix image files and in-memory images")
    images = [np.ascontiguousarray(r.image, np.uint8) for r in records]

    def load(i):  # arrays stay in numpy: a graph constant would copy them and is capped at 2 GB
        image = tf.numpy_function(lambda k: images[k], [i], tf.uint8, stateful=False)
        return tf.ensure_shape(image, [None, None, 3])
    return load


def _letterboxed(image, boxes, labels, size: int, max_boxes: int):
    from models.letterbox import letterbox, to_input
    image, params = letterbox(image, size)
    return image, *_pack(to_input(boxes, params), labels, max_boxes)


def _augment(image, boxes, labels, seed, size: int, max_boxes: int):
    """Random flip and scale/placement jitter of one uint8 image and its boxes (original pixels) → input pixels."""
    import tensorflow as tf

    from models.letterbox import FILL, letterbox_params
    flip_seed, scale_seed, x_seed, y_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    if_flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(if_flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    boxes = tf.where(if_flip, tf.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1), boxes)

    scale = letterbox_params(shape[0], shape[1], size)[0] * tf.random.stateless_uniform([], scale_seed, *SCALE_JITTER)
    new_w = tf.maximum(1, tf.cast(tf.round(w * scale), tf.int32))
    new_h = tf.maximum(1, tf.cast(tf.round(h * scale), tf.int32))
    # Offset of the resized image's corner in the input: [0, S − new] when it fits (padding), [S − new, 0] if not.
    off_x = _uniform_int(x_seed, tf.minimum(0, size - new_w), tf.maximum(0, size - new_w))
    off_y = _uniform_int(y_seed, tf.minimum(0, size - new_h), tf.maximum(0, size - new_h))
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]), method="bilinear")
    padded = tf.pad(resized - FILL, [[tf.maximum(off_y, 0), tf.maximum(size - new_h - off_y, 0)],
                                     [tf.maximum(off_x, 0), tf.maximum(size - new_w - off_x, 0)], [0, 0]]) + FILL
    out = padded[tf.maximum(-off_y, 0):tf.maximum(-off_y, 0) + size, tf.maximum(-off_x, 0):tf.maximum(-off_x, 0) + size]
    out = tf.ensure_shape(out, [size, size, 3])

    factor = tf.stack([tf.cast(new_w, tf.float32) / w, tf.cast(new_h, tf.float32) / h] * 2)
    offset = tf.cast(tf.stack([off_x, off_y, off_x, off_y]), tf.float32)
    moved = boxes * factor + offset
    clipped = tf.clip_by_value(moved, 0.0, float(size))
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (cw * ch >= MIN_VISIBLE * area) & (cw >= MIN_SIZE) & (ch >= MIN_SIZE)
    return out, *_pack(clipped, tf.where(keep, labels, -1), max_boxes)


def _uniform_int(seed, low, high):
    """A stateless uniform integer in [low, high] (inclusive)."""
    import tensorflow as tf
    return low + tf.random.stateless_uniform([], seed, 0, high - low + 1, dtype=tf.int32)


def _pack(boxes, labels, max_boxes: int):
    """Keeps rows with label ≥ 0 (in order), the first ``max_boxes`` of them, padded with zero boxes / −1 labels."""
    import tensorflow as tf
    keep = labels >= 0
    boxes = tf.boolean_mask(boxes, keep)[:max_boxes]
    labels = tf.boolean_mask(labels, keep)[:max_boxes]
    pad = max_boxes - tf.shape(labels)[0]
    boxes = tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), [max_boxes, 4])
    labels = tf.ensure_shape(tf.pad(labels, [[0, pad]], constant_values=-1), [max_boxes])
    return boxes, labels
