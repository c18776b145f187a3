"""Config checks shared by the library's commands (workflows, detection fine-tuning), all TensorFlow-free: the error
type for a bad config value and the checks that several commands repeat."""
from __future__ import annotations

import math
import os

from common.errors import InputError


class ConfigError(InputError):
    """A bad config value or combination; the message names the command-line flag it comes from."""


FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max: every model and optimizer computes in float32


def is_finite32(value: float) -> bool:
    """Whether ``value`` is finite *as a float32* (|value| <= `FLOAT32_MAX`; NaN and ±inf are not)."""
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


# Upper bounds of the optimisation settings (checked in every workflow's validate, documented in the recipes' --help):
# a learning rate, weight decay or λ past them cannot train (the first steps overflow float32 or flip the weights),
# and finite float32 values far past them overflow the computation itself (lr · gradient, λ · cost → inf → NaN).
LR_MAX = 1000.0  # learning rates (FGNAS' gate rate goes up to 100)
DECAY_MAX = 1.0  # weight decays and L2 weights (decoupled w -= lr·wd·w, or 0.5·wd·Σw² in the loss)
LAM_MAX = 1000.0  # λ of a cost loss
WIDTH_MAX = 4.0  # width multipliers of the search spaces (4.0: 256/640/1280/2560 channels in SPOS' cifar space)
CHANNELS_MAX = 1024  # FGNAS --width: the VGG backbone's channel count


def check_at_most(**values) -> None:
    """``name=(value, upper bound)``: upper bounds of float or integer settings (``None`` means "default" and
    passes), for the command line and in-process configs alike."""
    for name, (value, high) in values.items():
        if isinstance(value, float) and not is_finite32(value):
            raise ConfigError(f"--{name}={value}: must be a finite number within float32 range")
        if value is not None and value > high:
            raise ConfigError(f"--{name}={value:g}: must be at most {high:g}")


def check_finite(value: float, what: str, where: str, hint: str) -> None:
    """`Diverged` when ``value`` (a loss, or a count of non-finite weights as ``nan``) is NaN or infinite:
    ``"<what> became NaN <where>: <hint>"``."""
    if not math.isfinite(value):
        from common.errors import Diverged
        raise Diverged(f"{what} became {'NaN' if value != value else 'infinite'} {where}: {hint}")


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
               "qat_report.json": "recipes.qat", "settings.json": "recipes.finetune_yolo",
               "pipeline_settings.json": "recipes.pipeline"}


def check_out_dir(path: str, flag: str = "--out_dir", own: str | None = None, files=(), dirs=()) -> None:
    """``path`` may be missing (created later) but not a file, nor under one, and the directory that will hold it
    must be writable — checked before any work starts, so no run fails at its first write. ``own``: the
    `RUN_MARKERS` file this command writes; a directory holding another command's marker is refused. ``files`` and
    ``dirs``: the names the command writes inside (its ``OUT_FILES``/``OUT_DIRS``), which must not be taken by the
    other kind of file (`check_run_outputs`)."""
    if not path:
        raise ConfigError(f"{flag}: empty; name a directory")
    if os.path.islink(path) and not os.path.exists(path):
        raise ConfigError(f"{flag}={path}: a symlink that leads nowhere (dangling, or a loop)")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag}={path}: exists and is not a directory")
    _check_length(path, flag, file=False)
    if os.path.isdir(path):
        for marker, owner in RUN_MARKERS.items():
            if marker != own and os.path.exists(os.path.join(path, marker)):
                raise ConfigError(f"{flag}={path}: holds a run of {owner} ({marker}), whose outputs this would "
                                  f"overwrite; use a new {flag}")
    check_run_outputs(path, flag, tuple(files) + ((own,) if own else ()), dirs)
    _check_home(path, flag, path)


NAME_MAX, PATH_MAX = 255, 4095  # Linux limits in bytes (one path component; a whole path)
TEMP_SUFFIX = len("..") + 8 + len(".partial")  # atomic_write's ".NAME.XXXXXXXX.partial" (+ ".EXT") around a name


def _check_length(path: str, flag: str, file: bool) -> None:
    """Every component of ``path`` fits the file system's name limit — a file's with the room its atomic write's
    temp name needs — and the whole path fits the path limit."""
    full = os.path.abspath(path)
    if len(os.fsencode(full)) > PATH_MAX - (TEMP_SUFFIX if file else 0):
        raise ConfigError(f"{flag}: a path of {len(os.fsencode(full))} bytes is too long for this file system")
    parts = [c for c in full.split(os.sep) if c]
    for i, c in enumerate(parts):
        room = NAME_MAX - (TEMP_SUFFIX + len(os.path.splitext(c)[1]) if file and i == len(parts) - 1 else 0)
        if len(os.fsencode(c)) > room:
            raise ConfigError(f"{flag}: the name {c[:40]}… has {len(os.fsencode(c))} bytes; at most {room} fit "
                              "(the file system's limit" + (", less the temp name of the atomic write)" if room
                                                             < NAME_MAX else ")"))


def check_writable(path: str, flag: str, *, marker_ok: bool = False, **inputs) -> None:
    """The file ``path`` can be created: it is not a directory, its nearest existing ancestor is a writable
    directory (missing directories are created later), its name fits the file system, it is not a run's settings
    file (`RUN_MARKERS`: another run's resume would break; ``marker_ok``: the command's own) and it is none of
    ``inputs`` (``flag_name=path`` of the command's input files: an output must never replace what it reads)."""
    if not path:
        raise ConfigError(f"{flag}: empty; name a file")
    _check_file_kind(path, flag)
    _check_length(path, flag, file=True)
    base = os.path.basename(os.path.realpath(path))  # a symlink is written through: judge what it leads to
    if base in RUN_MARKERS and os.path.exists(path) and not marker_ok:
        raise ConfigError(f"{flag}={path}: is the settings file of a run of {RUN_MARKERS[base]}; writing it would "
                          "break that run's resume")
    check_distinct(path, flag, **inputs)
    _check_home(path, flag, os.path.dirname(os.path.realpath(path)))  # a symlink is written through (atomic_write)


def _kind(path: str, flag: str) -> str | None:
    """`common.io.file_kind` of ``path`` (symlinks followed), its failures as one line."""
    from common.io import file_kind
    try:
        return file_kind(path)
    except OSError as e:  # a symlink loop, a folder that cannot be searched
        raise ConfigError(f"{flag}={path}: cannot be looked at ({e.strerror or e})") from None


def _check_file_kind(path: str, flag: str) -> None:
    """An output file ``path`` is missing or a regular file (a symlink counts as what it leads to: it is written
    through); a directory, FIFO, socket or device (``/dev/null``) would be replaced by the atomic write's rename."""
    kind = _kind(path, flag)
    if kind in (None, "regular file"):
        return
    via = f" (a symlink to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise ConfigError(f"{flag}={path}: is a {kind}{via}, not a regular file; name a regular file to write")


def check_run_outputs(out_dir: str, flag: str = "--out_dir", files=(), dirs=()) -> None:
    """Each name in ``files`` (paths relative to ``out_dir``, which the run writes as files) is missing or a regular
    file, and each name in ``dirs`` (folders the run makes) is missing or a directory, every folder on the way to
    either included: a name taken by the other kind (or by a FIFO, socket or device) fails the run at its first
    write, often after the work. Checked before any work."""
    if not os.path.isdir(out_dir):
        return  # missing: everything is created; a file is refused by check_out_dir
    for name, want in [(n, "regular file") for n in files] + [(n, "directory") for n in dirs]:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            sub = os.path.join(out_dir, *parts[:i])
            need = want if i == len(parts) else "directory"
            kind = _kind(sub, flag)
            if kind is None:
                break
            if kind != need:
                what = "a file" if need == "regular file" else "a folder"
                raise ConfigError(f"{flag}={out_dir}: {'/'.join(parts[:i])} is a {kind}, but this command writes "
                                  f"{what} there; remove it or use a new {flag}")


# Files a run writes into its own --out_dir (besides its RUN_MARKERS settings file): an --output of the same run
# must not be one of them.
RUN_FILES = ("summary.json", "history.json", "weights.npz", "best_weights.npz", "model_card.json", "derived_init.npz",
             "argmax.npz", "kernel_distribution.png", "alpha_trajectories.png", "fgnas_layers.png", "evolution.png",
             "population.png", "evolution_state.json", "random_state.json")


def check_not_run_file(path: str, flag: str, out_dir: str, out_flag: str = "--out_dir") -> None:
    """``path`` (an extra output, e.g. a search's ``--output`` spec) is not a file the run itself writes in its
    ``out_dir`` (`RUN_FILES`, `RUN_MARKERS`), which would overwrite one of them or be overwritten."""
    real = os.path.realpath(path)  # a symlink is written through (atomic_write): judge its target
    if os.path.dirname(real) != os.path.realpath(out_dir):
        return
    base = os.path.basename(real)
    if base in RUN_FILES or base in RUN_MARKERS:
        raise ConfigError(f"{flag}={path}: is the run's own {base} in {out_flag}; name another file")


def check_distinct(path: str, flag: str, **inputs) -> None:
    """``path`` (an output) is not the same file as any ``name=input path`` (symlinks and relative paths
    resolved)."""
    real = os.path.realpath(path)
    for name, other in inputs.items():
        if other and isinstance(other, (str, os.PathLike)) and os.path.realpath(other) == real:
            raise ConfigError(f"{flag}={path}: is the --{name} input; writing it would destroy what this command "
                              "reads")


def check_at_least(**values) -> None:
    """``name=(value, lower bound)``: absl enforces these bounds on the command line; in-process configs get the
    same check here (``None`` means "default" and passes)."""
    for name, (value, low) in values.items():
        if isinstance(value, float) and not is_finite32(value):
            raise ConfigError(f"--{name}={value}: must be a finite number within float32 range")
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


def _gpu_host() -> bool:
    """Whether an NVIDIA GPU is visible (TensorFlow-free: the driver's /proc entries)."""
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus")) and os.environ.get("CUDA_VISIBLE_DEVICES") not in ("", "-1")
    except OSError:
        return False


def check_activation_memory(spec, size: int, batch_size: int, flag: str = "--batch_size") -> None:
    """InputError when one batch's activations alone (a lower bound: `models.counting.peak_activation_bytes`)
    exceed the host's available memory, so a too-large ``--input_size``/``--batch_size`` is one line and not an
    out-of-memory kill minutes later."""
    from models.counting import peak_activation_bytes
    if _gpu_host():  # activations live in accelerator memory there, not in the host's
        return
    need = peak_activation_bytes(spec, size) * batch_size
    have = available_memory_bytes()
    if have is not None and need > have:
        per_image = need / batch_size
        fits = int(have // per_image)
        raise InputError(f"{flag}={batch_size} at input size {size}: one batch's activations need at least "
                         f"{need / 2**30:.1f} GiB and this host has {have / 2**30:.1f} GiB available; "
                         + (f"use {flag}={fits} or less, or a smaller input size" if fits >= 1 else
                            f"even one image needs {per_image / 2**30:.1f} GiB: use a smaller input size"))


def check_rgb_spec(spec, flag: str = "--model") -> None:
    """The data pipelines (`inputs.classification`, `inputs.voc`) decode every image to RGB: a spec whose
    ``input.channels`` is not 3 builds, but cannot read them."""
    if spec.input.channels != 3:
        raise ConfigError(f"{flag}: {spec.name} reads {spec.input.channels}-channel input (input.channels), but the "
                          "data pipelines decode RGB images (3 channels); build it with the Python API for other "
                          "input")
