"""Config checks shared by the library's commands (workflows, detection fine-tuning), all TensorFlow-free: the error
type for a bad config value and the checks that several commands repeat."""
from __future__ import annotations

import math
import os

from common.errors import InputError


class ConfigError(InputError):
    """A bad config value or combination; the message names the command-line flag it comes from."""


def check_replicas(strategy: str, cpu_replicas: int, batch_size: int) -> None:
    """``--cpu_replicas`` needs ``--strategy=mirrored`` and must divide ``--batch_size``."""
    if strategy == "mirrored" and cpu_replicas > 1 and batch_size % cpu_replicas:
        raise ConfigError(f"--batch_size={batch_size} does not split over --cpu_replicas={cpu_replicas}")


def _check_home(path: str, flag: str, start: str) -> None:
    """The nearest existing ancestor of ``start`` (itself included) must be a writable directory."""
    d = os.path.abspath(start)
    while not os.path.exists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise ConfigError(f"{flag}={path}: {d} is a file, not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}={path}: directory {d} is not writable")


# The file that marks a directory as one command's run (its settings, or QAT's report): another command writing
# there would overwrite that run's outputs (weights.npz, history.json, summary.json, tensorboard/).
RUN_MARKERS = {"train_settings.json": "recipes.train", "search_settings.json": "a search (recipes.search_metakernel, "
               "search_ednas or search_fgnas)", "supernet_settings.json": "recipes.search_spos",
               "qat_report.json": "recipes.qat", "settings.json": "recipes.finetune_yolo"}


def check_out_dir(path: str, flag: str = "--out_dir", own: str | None = None) -> None:
    """``path`` may be missing (created later) but not a file, nor under one, and the directory that will hold it
    must be writable — checked before any work starts, so no run fails at its first write. ``own``: the
    `RUN_MARKERS` file this command writes; a directory holding another command's marker is refused."""
    if not path:
        raise ConfigError(f"{flag}: empty; name a directory")
    if os.path.islink(path) and not os.path.exists(path):
        raise ConfigError(f"{flag}={path}: a symlink that leads nowhere (dangling, or a loop)")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag}={path}: exists and is not a directory")
    if os.path.isdir(path):
        for marker, owner in RUN_MARKERS.items():
            if marker != own and os.path.exists(os.path.join(path, marker)):
                raise ConfigError(f"{flag}={path}: holds a run of {owner} ({marker}), whose outputs this would "
                                  f"overwrite; use a new {flag}")
    _check_home(path, flag, path)


def check_writable(path: str, flag: str) -> None:
    """The file ``path`` can be created: it is not a directory, and its nearest existing ancestor is a writable
    directory (missing directories are created later)."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag}={path}: is a directory")
    _check_home(path, flag, os.path.dirname(os.path.abspath(path)))


def check_at_least(**values) -> None:
    """``name=(value, lower bound)``: absl enforces these bounds on the command line; in-process configs get the
    same check here (``None`` means "default" and passes)."""
    for name, (value, low) in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{name}={value}: must be a finite number")
        if value is not None and value < low:
            raise ConfigError(f"--{name}={value}: must be at least {low}")


def check_one_of(**values) -> None:
    """``name=(value, allowed)``: absl enums enforce these on the command line; in-process configs get the same
    check here."""
    for name, (value, allowed) in values.items():
        if value not in allowed:
            raise ConfigError(f"--{name}={value}: one of {', '.join(map(str, allowed))}")


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo (Linux), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_activation_memory(spec, size: int, batch_size: int, flag: str = "--batch_size") -> None:
    """InputError when one batch's activations alone (a lower bound: `models.counting.peak_activation_bytes`)
    exceed the host's available memory, so a too-large ``--input_size``/``--batch_size`` is one line and not an
    out-of-memory kill minutes later."""
    from models.counting import peak_activation_bytes
    need = peak_activation_bytes(spec, size) * batch_size
    have = available_memory_bytes()
    if have is not None and need > have:
        per_image = need / batch_size
        fits = int(have // per_image)
        raise InputError(f"{flag}={batch_size} at input size {size}: one batch's activations need at least "
                         f"{need / 2**30:.1f} GiB and this host has {have / 2**30:.1f} GiB available; "
                         + (f"use {flag}={fits} or less, or a smaller input size" if fits >= 1 else
                            f"even one image needs {per_image / 2**30:.1f} GiB: use a smaller input size"))
