"""Config checks shared by the library's commands (workflows, detection fine-tuning), all TensorFlow-free: the error
type for a bad config value and the checks that several commands repeat."""
from __future__ import annotations

import os

from common.errors import InputError


class ConfigError(InputError):
    """A bad config value or combination; the message names the command-line flag it comes from."""


def check_replicas(strategy: str, cpu_replicas: int, batch_size: int) -> None:
    """``--cpu_replicas`` needs ``--strategy=mirrored`` and must divide ``--batch_size``."""
    if strategy == "mirrored" and cpu_replicas > 1 and batch_size % cpu_replicas:
        raise ConfigError(f"--batch_size={batch_size} does not split over --cpu_replicas={cpu_replicas}")


def check_out_dir(path: str, flag: str = "--out_dir") -> None:
    """``path`` may be missing (created later) but not a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag}={path}: exists and is not a directory")


def check_at_least(**values) -> None:
    """``name=(value, lower bound)``: absl enforces these bounds on the command line; in-process configs get the
    same check here (``None`` means "default" and passes)."""
    for name, (value, low) in values.items():
        if value is not None and value < low:
            raise ConfigError(f"--{name}={value}: must be at least {low}")


def check_one_of(**values) -> None:
    """``name=(value, allowed)``: absl enums enforce these on the command line; in-process configs get the same
    check here."""
    for name, (value, allowed) in values.items():
        if value not in allowed:
            raise ConfigError(f"--{name}={value}: one of {', '.join(map(str, allowed))}")
