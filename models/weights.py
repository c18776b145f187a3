"""Weights by layer name, shared by Keras 3, the tf_keras twin and supernet extraction.

A weights file is an ``.npz`` of ``{"<layer name>/<variable>": array}`` (e.g. ``s1_b0_dw/depthwise_kernel``,
``stem_bn/moving_mean``). Keying by the builder's deterministic layer names, not by Keras' internal object paths,
lets the same file load into either framework and survive model surgery that keeps names.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib

import numpy as np

from common.errors import InputError
from common.io import atomic_write


class WeightsError(InputError):
    """A weights file does not fit a model (missing key, wrong shape) or is corrupt."""


def _short(variable) -> str:
    # Keras 3: name == "kernel"; tf_keras: name == "stem_conv/kernel:0", and a DepthwiseConv2D's kernel is
    # "depthwise_kernel" there (same shape). Keys use the Keras 3 names.
    short = variable.name.split("/")[-1].split(":")[0]
    return "kernel" if short == "depthwise_kernel" else short


def named_weights(model) -> dict[str, np.ndarray]:
    """All weights of ``model`` (trainable and not) as ``{"layer/var": array}``."""
    out = {}
    for layer in model.layers:
        for v in layer.weights:
            key = f"{layer.name}/{_short(v)}"
            if key in out:
                raise WeightsError(f"duplicate weight name {key!r} in model {model.name!r}")
            out[key] = np.asarray(v.numpy())
    return out


def assign(model, arrays: dict[str, np.ndarray], source: str = "weights", strict: bool = False) -> None:
    """Sets every weight of ``model`` from ``arrays`` by name; keys the model lacks are ignored unless ``strict``
    (weights of another, larger architecture would otherwise load silently into a smaller one).

    Raises:
        WeightsError: a model weight is missing from ``arrays`` or has another shape, or (``strict``) ``arrays``
            holds weights the model lacks (nothing is assigned then).
    """
    if strict:
        have = {f"{layer.name}/{_short(v)}" for layer in model.layers for v in layer.weights}
        extra = sorted(set(arrays) - have)
        if extra:
            raise WeightsError(f"{source}: {len(extra)} weight(s) the model {model.name!r} lacks (e.g. "
                               f"{', '.join(map(repr, extra[:3]))}): they belong to another architecture")
    plan = []
    for layer in model.layers:
        for v in layer.weights:
            key = f"{layer.name}/{_short(v)}"
            if key not in arrays:
                raise WeightsError(f"{source}: no weight {key!r} for model {model.name!r}")
            a = arrays[key]
            if tuple(a.shape) != tuple(v.shape):
                raise WeightsError(f"{source}: {key!r} has shape {tuple(a.shape)}, the model needs {tuple(v.shape)}")
            plan.append((v, a))
    for v, a in plan:
        v.assign(a.astype(v.dtype.name if hasattr(v.dtype, "name") else v.dtype))


def copy_weights(src, dst) -> None:
    """Copies weights between two builds of the same spec (e.g. Keras 3 → tf_keras twin) by layer name."""
    assign(dst, named_weights(src), source=f"model {src.name!r}")


def check_finite_arrays(arrays: dict, what: str, hint: str = "the run diverged; lower its learning rate") -> None:
    """`common.errors.Diverged` naming the first float array of ``arrays`` that holds NaN or ±inf: weights a
    diverged run produced, which `read_npz` would refuse (no file of them is ever written)."""
    for key, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            from common.errors import Diverged
            bad = int(a.size - np.isfinite(a).sum())
            raise Diverged(f"{what}: weight {key} holds {bad} NaN/inf value(s): {hint}")


def write_npz(path: str, arrays: dict, what: str | None = None, hint: str = "the run diverged; lower its learning "
              "rate") -> None:
    """Writes ``{key: array}`` as an ``.npz`` atomically, after `check_finite_arrays` (``what``: the message's
    subject, default the path): a weights file never holds NaN or ±inf."""
    check_finite_arrays(arrays, what or path, hint)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def save_npz(model, path: str, what: str | None = None, hint: str = "the run diverged; lower its learning "
             "rate") -> str:
    """Writes the model's weights atomically (never NaN/inf ones: `write_npz`); returns the file's sha256."""
    write_npz(path, named_weights(model), what, hint)
    return sha256(path)


def _check_card(path: str) -> None:
    """When a training run's ``model_card.json`` sits beside ``path`` and names it, its sha256 must match."""
    card_path = os.path.join(os.path.dirname(os.path.abspath(path)), "model_card.json")
    if not os.path.isfile(card_path):
        return
    try:
        with open(card_path, encoding="utf-8") as f:
            card = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # not ours to judge: the weights file itself is still checked below
    if not isinstance(card, dict) or card.get("file") != os.path.basename(path) \
            or not isinstance(card.get("sha256"), str):
        return
    digest = sha256(path)
    if digest != card["sha256"]:
        raise WeightsError(f"{path}: sha256 {digest[:12]}… differs from the {card['sha256'][:12]}… its model card "
                           f"{card_path} records (changed or damaged since it was written)")


def read_npz(path: str) -> dict[str, np.ndarray]:
    """``{name: array}`` of an ``.npz`` weights file. Anything else — a missing file, another format, a truncated or
    damaged archive, pickled objects, a sha256 that differs from a ``model_card.json`` beside it — raises
    :class:`WeightsError` naming the file (pickles are never loaded)."""
    if os.path.isdir(path):
        raise WeightsError(f"{path}: is a directory, not an .npz weights file")
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: no such weights file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror})") from None
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path}: not an .npz weights archive (no zip structure: another format, or truncated)")
    _check_card(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise WeightsError(f"{path}: holds pickled Python objects, not arrays; refusing to load it") from None
        raise WeightsError(f"{path}: damaged weights archive ({e})") from None
    except (OSError, EOFError, KeyError, zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
            RuntimeError) as e:
        raise WeightsError(f"{path}: damaged weights archive ({type(e).__name__}: {e})") from None
    for key, a in arrays.items():  # a model trained into NaN, or arrays that are not numbers at all
        if a.dtype.kind not in "fiub":
            raise WeightsError(f"{path}: {key!r} holds {a.dtype} values, not numbers")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int(a.size - np.isfinite(a).sum())
            raise WeightsError(f"{path}: {key!r} has {bad} NaN/inf value(s) of {a.size} (a diverged training?)")
    return arrays


def load_npz(model, path: str) -> None:
    assign(model, read_npz(path), source=path)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def randomized_weights(model, seed: int = 0, shift_std: float = 0.1, kernel_scale=None) -> dict:
    """``{name: float32 array}`` for ``model`` with O(1) logits (a fresh Keras init gives logits ~1e-4..1e-2, which
    would make parity checks vacuous): BN variance U(0.5, 2), γ U(0.5, 1.5), β / moving mean / bias N(0, shift_std),
    other kernels He-normal (``kernel_scale=None``) or the model's own values × ``kernel_scale``."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in named_weights(model).items():
        if k.endswith("moving_variance"):
            a = rng.uniform(0.5, 2.0, v.shape)
        elif k.endswith("gamma"):
            a = rng.uniform(0.5, 1.5, v.shape)
        elif k.endswith(("beta", "moving_mean", "bias")):
            a = rng.normal(0.0, shift_std, v.shape)
        elif kernel_scale is None:
            a = rng.normal(0.0, np.sqrt(2.0 / np.prod(v.shape[:-1])), v.shape)
        else:
            a = v * kernel_scale
        out[k] = a.astype(np.float32)
    return out
