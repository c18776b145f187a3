"""Initial weights of a training run: ``--weights`` resolved to a ``.npz`` (path or zoo tag), read and checked, and
loaded into a built model by layer name (a classifier of another width is left at its initialisation).

Everything but `load_init_weights` runs without TensorFlow (validation happens before TensorFlow is imported)."""
from __future__ import annotations

import os

import numpy as np

from common.errors import InputError

CLASSIFIER_PREFIX = "classifier/"


def resolve_weights(spec, weights: str | None) -> str | None:
    """The ``.npz`` path named by ``--weights``: '' → None (random init), a ``.npz`` path, or a zoo tag.

    Raises:
        InputError: the ``.npz`` file does not exist.
        ZooError: unknown tag for this model, or a zoo weights file that fails its sha256 check.
    """
    if not weights:
        return None
    if weights.endswith(".npz") or os.sep in weights:
        if not os.path.isfile(weights):
            raise InputError(f"--weights={weights}: no such file")
        return weights
    from zoo import ZooError, weights_path
    try:
        return weights_path(spec.name, weights)
    except ZooError as e:
        if "has no weights" not in str(e):
            raise
        raise ZooError(f"--weights={weights}: {e}; --weights= (empty) starts from random initialisation") from None


def read_weights(path: str) -> dict[str, np.ndarray]:
    """The arrays of a weights ``.npz`` (WeightsError when unreadable), checked to be keyed ``layer/variable``."""
    from models.weights import WeightsError, read_npz
    arrays = read_npz(path)
    if not arrays:
        raise WeightsError(f"{path}: holds no arrays")
    bad = [k for k in arrays if "/" not in k]
    if bad:
        raise WeightsError(f"{path}: key {bad[0]!r} is not '<layer>/<variable>' (not a weights file of this zoo)")
    return arrays


def weights_card(spec, value: str | None, path: str | None) -> dict:
    """The model card of the weights ``--weights=value`` resolved to ``path`` ({} when there is none): the zoo's card
    for a tag, else the ``model_card.json`` a training run wrote beside its ``.npz`` (its sha256 is checked when the
    file is read, `models.weights.read_npz`). Recipes take the input size, class count and class names from it."""
    import json
    if not path:
        return {}
    if not (value.endswith(".npz") or os.sep in value):
        from zoo import weights_cards
        return dict(weights_cards(spec.name).get(value, {}))
    card_path = os.path.join(os.path.dirname(os.path.abspath(path)), "model_card.json")
    try:
        with open(card_path, encoding="utf-8") as f:
            card = json.load(f)
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) and card.get("file") == os.path.basename(path) else {}


def card_input_size(card: dict) -> int | None:
    """The input size a card records (an int ≥ 8), else None."""
    size = card.get("input_size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 8 else None


def card_class_names(card: dict, classes: int) -> list[str] | None:
    """The card's class names when it has ``classes`` strings of them (zoo cards may say ``imagenet``)."""
    names = card.get("class_names")
    if names == "imagenet" and classes == 1000:
        from zoo import imagenet_labels
        return imagenet_labels()
    if isinstance(names, list) and len(names) == classes and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def weights_classes(arrays: dict[str, np.ndarray]) -> int | None:
    """Output width of the classifier in a weights file, or None when it has no ``classifier/kernel``."""
    kernel = arrays.get(CLASSIFIER_PREFIX + "kernel")
    return None if kernel is None or kernel.ndim != 2 else int(kernel.shape[-1])


def load_init_weights(model, arrays: dict[str, np.ndarray], source: str) -> dict:
    """Sets ``model``'s weights from ``arrays`` by layer name; skips the classifier when its shape differs.

    Every other weight must be present with the model's shape (nothing is assigned otherwise). The classifier is
    skipped (left at its fresh initialisation) when the file's classifier shapes differ from the model's (another
    class count) or the file has none; this is how a zoo checkpoint or a search's ``derived_init.npz`` seeds a run
    on a dataset with another number of classes.

    Returns:
        ``{"loaded": number of arrays assigned, "skipped": [keys left at initialisation]}``.

    Raises:
        WeightsError: a non-classifier weight is missing or has another shape.
    """
    from models.weights import assign, named_weights
    current = named_weights(model)
    skipped = []
    merged = dict(arrays)
    for key, value in current.items():
        if not key.startswith(CLASSIFIER_PREFIX):
            continue
        if key not in arrays or tuple(arrays[key].shape) != tuple(value.shape):
            merged[key] = value
            skipped.append(key)
    if skipped:  # all classifier weights or none: a half-loaded classifier makes no sense
        skipped = sorted(k for k in current if k.startswith(CLASSIFIER_PREFIX))
        merged.update({k: current[k] for k in skipped})
    assign(model, merged, source=source)
    return {"loaded": len(current) - len(skipped), "skipped": skipped}


def checked_weights_file(spec, value: str, classes: int) -> str | None:
    """The ``.npz`` named by ``--weights`` ('' → None; a path; or a zoo tag, verified by sha256), checked to be a
    weights file of this zoo whose classifier has ``classes`` outputs — without TensorFlow (commands that convert a
    trained model: export, QAT).

    Raises:
        InputError: no such file. WeightsError: unreadable, not keyed ``layer/variable``, or another classifier
            width.
        ZooError: unknown tag, or a zoo file that fails its sha256 check.
    """
    from models.weights import WeightsError
    path = resolve_weights(spec, value)
    if path is None:
        return None
    kernel = read_weights(path).get("classifier/kernel")  # every name and shape is checked again at load
    shape = None if kernel is None else kernel.shape
    if shape is not None and shape[-1] != classes:
        raise WeightsError(f"--weights={value}: its classifier has {shape[-1]} classes, the model {classes}; "
                           f"pass --classes={shape[-1]}")
    return path


def check_class_names(trained: list | tuple | None, data: list | tuple | None, flag: str) -> None:
    """Weights trained on classes ``trained`` (their model card's ``class_names``) scored on data with classes
    ``data``: the same count but other names would compare unrelated labels. Nothing is checked where either list
    is unknown, the counts differ (callers refuse that with its own message) or the data's names are bare ids (a
    tsv list)."""
    if not trained or not data or len(trained) != len(data) or all(str(n) == str(i) for i, n in enumerate(data)):
        return  # unknown, or another class count (the count check names that)
    a, b = [str(n).lower() for n in trained], [str(n).lower() for n in data]
    if a != b:
        diff = next(i for i in range(min(len(a), len(b)) + 1) if i == min(len(a), len(b)) or a[i] != b[i])
        raise InputError(f"{flag}: the weights were trained on classes ({', '.join(map(str, trained[:4]))}, …) and "
                         f"the data's are ({', '.join(map(str, data[:4]))}, …); class {diff} differs, so top-1 would "
                         "compare unrelated labels")
