"""The model zoo: specs by name or path, verified pretrained weights, and ``build``.

    import zoo
    model = zoo.build("efficientnet_lite0", weights="imagenet")   # raw 0–255 RGB in, logits out
    zoo.list_models()                                              # names of zoo/specs/*.json

Specs live in ``zoo/specs/<name>.json``. A weights file ``zoo/weights/<name>-<tag>.npz`` is described by its model card
``zoo/weights/<name>-<tag>.json`` (dataset, metric, how it was produced, sha256); the sha256 is checked before every
load and a mismatch is refused.
"""
from __future__ import annotations

import json
import operator
import os

from common.errors import InputError
from models import spec as S
from models.counting import count
from models.weights import sha256

ZOO_DIR = os.path.dirname(os.path.abspath(__file__))
SPECS_DIR = os.path.join(ZOO_DIR, "specs")
WEIGHTS_DIR = os.path.join(ZOO_DIR, "weights")
CARD_KEYS = ("model", "tag", "file", "sha256", "dataset", "input_size", "metrics", "produced_by", "source", "license")


class ZooError(InputError, LookupError):
    """Unknown model or weights tag, missing file, or a weights file that fails its sha256 check."""


def list_models() -> list[str]:
    """Names of the registered specs, sorted."""
    return sorted(f[:-5] for f in os.listdir(SPECS_DIR) if f.endswith(".json"))


def spec_path(name_or_path: str | os.PathLike) -> str:
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ZooError(f"model: a zoo name or a spec .json path, got {name_or_path!r}")
    if name_or_path.endswith(".json") or os.sep in name_or_path:
        if os.path.isdir(name_or_path):
            raise ZooError(f"{name_or_path}: is a directory, not a spec .json file")
        if not os.path.isfile(name_or_path):
            raise ZooError(f"spec file not found: {name_or_path}")
        return name_or_path
    path = os.path.join(SPECS_DIR, f"{name_or_path}.json")
    if not os.path.isfile(path):
        raise ZooError(f"unknown model {name_or_path!r}; known: {', '.join(list_models())} (or give a .json path)")
    return path


def get_spec(name_or_path: str) -> S.ModelSpec:
    """The decoded spec of a zoo name or a spec file path.

    Raises:
        ZooError: unknown name or missing file.
        SpecError: the file is not a valid spec (the message names the file and the field).
    """
    path = spec_path(name_or_path)
    with open(path, "rb") as f:
        text = f.read()
    try:
        return S.loads(text, source=path)
    except S.SpecError as e:
        if not e.path and e.message.startswith(path):  # loads already named the file
            raise
        raise S.SpecError(f"{path}: {e.path}" if e.path else path, e.message) from None


def weights_cards(name: str) -> dict[str, dict]:
    """``{tag: model card}`` of the weights registered for zoo model ``name``."""
    cards = {}
    if not os.path.isdir(WEIGHTS_DIR):
        return cards
    for f in sorted(os.listdir(WEIGHTS_DIR)):
        if f.startswith(f"{name}-") and f.endswith(".json"):
            with open(os.path.join(WEIGHTS_DIR, f), encoding="utf-8") as fh:
                card = json.load(fh)
            if card.get("model") == name:
                cards[card["tag"]] = card
    return cards


def weights_path(name: str, tag: str) -> str:
    """Path of the weights file ``name``/``tag`` after checking its sha256 against the model card."""
    cards = weights_cards(name)
    if tag not in cards:
        have = ", ".join(cards) or "none"
        raise ZooError(f"model {name!r} has no weights {tag!r} (available: {have})")
    card = cards[tag]
    path = os.path.join(WEIGHTS_DIR, card["file"])
    if not os.path.isfile(path):
        raise ZooError(f"weights file missing: {path}")
    digest = sha256(path)
    if digest != card["sha256"]:
        raise ZooError(f"weights file {path} fails its sha256 check (got {digest}, the model card says "
                       f"{card['sha256']}); refusing to load it")
    return path


def build(name_or_path: str, weights: str | None = None, keras_module=None, **kwargs):
    """Builds a zoo model (see :func:`models.builder.build` for ``include_top``, ``input_size``, ``classes``, …).

    Args:
        name_or_path: zoo name (``"mixnet_s"``) or path of a spec ``.json``.
        weights: ``None`` or ``""`` (random init, as the recipes' ``--weights=``), a zoo tag such as
            ``"imagenet"``, or a path (``str`` or ``os.PathLike``) to a ``.npz`` weights file — a path is anything
            ending in ``.npz`` or holding a directory separator, as on the command line.
        keras_module: ``keras`` (default) or ``tf_keras``.
    """
    from models.builder import build as build_spec  # imports Keras; `list`/`describe` stay TensorFlow-free
    spec = get_spec(name_or_path)
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights is not None and not isinstance(weights, str):
        raise ZooError(f"weights: None, a zoo tag or a .npz path, got {weights!r}")
    from training.weights import resolve_weights  # the rule --weights follows on the command line
    path = resolve_weights(spec, weights)
    return build_spec(spec, keras_module, weights=path, **kwargs)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard index order (from the pinned tensorflow-datasets package,
    read as data: no download, no import of tensorflow_datasets)."""
    import ast
    import importlib.util
    pkg = importlib.util.find_spec("tensorflow_datasets")
    path = os.path.join(pkg.submodule_search_locations[0], "datasets", "siscore", "labels.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "IMAGENET_LABELS_LIST":
            labels = ast.literal_eval(node.value)
            if len(labels) == 1000:
                return labels
    raise ZooError(f"ImageNet class names not found in {path}")


def describe(name_or_path: str, input_size: int | None = None) -> dict:
    """Summary used by ``python -m zoo describe``: name, params, MACs, input size, classes, weights."""
    spec = get_spec(name_or_path)
    size = spec.input.size if input_size is None else input_size
    cost = count(spec, size)  # SpecError for a size that is no integer in range
    size = operator.index(size)  # JSON-able (numpy integers are not)
    cards = weights_cards(spec.name) if spec_path(name_or_path).startswith(SPECS_DIR) else {}
    return {
        "name": spec.name, "family": spec.family, "params": cost.params, "macs": cost.macs, "input_size": size,
        "num_classes": spec.head.classes, "blocks": sum(len(s) for s in spec.stages),
        "weights": [{"tag": t, "file": c["file"], "sha256": c["sha256"], "dataset": c["dataset"],
                     "metrics": c.get("metrics", {})} for t, c in cards.items()],
        "provenance": S.encode(spec)["provenance"], "spec": spec_path(name_or_path),
    }
