"""The one file-writing helper: every output is written to a temp file beside its path and renamed into place, so a
kill never leaves a half-written file."""
from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
import tempfile

PARTIAL = ".partial"  # marks the temp file of an atomic write: ".<name>.<random>.partial<ext>"


def file_kind(path: str) -> str | None:
    """What ``path`` is after following symlinks: None when nothing is there (also a dangling symlink), else
    "regular file", "directory", "FIFO", "socket", "character device", "block device" or "special file"."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def not_regular(path: str) -> str | None:
    """Why ``path`` cannot be read as a file ("is a FIFO, not a regular file", …), or None when it is a regular
    file or nothing is there (``open`` then says so). Readers call it before ``open``: opening a FIFO waits for a
    writer forever, and a device such as /dev/zero reads without end."""
    try:
        kind = file_kind(path)
    except OSError as e:  # a symlink loop, a folder on the way that cannot be searched
        return f"cannot be looked at ({e.strerror or e})"
    return None if kind in (None, "regular file") else f"is a {kind}, not a regular file"


def atomic_write(path: str, write) -> None:
    """Calls ``write(binary_file)`` on a temp file beside ``path``, then renames it: never a half-written ``path``.
    A symlink is written through: its target is replaced (atomically) and the link stays. An existing ``path`` that
    is not a regular file (a directory, FIFO, socket or device, such as ``/dev/null``) is never replaced: OSError.
    A kill (SIGKILL: no cleanup runs) can leave the hidden temp file; `remove_partials` clears them at the next
    start of a run."""
    path = os.path.realpath(path)
    kind = file_kind(path)
    if kind not in (None, "regular file"):
        raise OSError(f"{path}: is a {kind}, not a regular file; refusing to replace it")
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=PARTIAL + os.path.splitext(path)[1],
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_PARTIAL_RE = re.compile(r"\..+\.[a-z0-9_]{8}\.partial(\.[A-Za-z0-9]+)?")  # mkstemp's 8 random characters


def is_partial(name: str) -> bool:
    """Whether a file name is the temp file of an unfinished `atomic_write` (``.<name>.<8 random>.partial<ext>``)."""
    return _PARTIAL_RE.fullmatch(name) is not None


def remove_partials(directory: str) -> list[str]:
    """Deletes the temp files killed atomic writes left anywhere under ``directory``; returns their paths."""
    removed = []
    for root, _, files in os.walk(directory):
        for name in files:
            if is_partial(name):
                path = os.path.join(root, name)
                try:
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
    return removed


def json_safe(obj):
    """``obj`` with every NaN or ±inf float (also numpy floats) replaced by ``None``: JSON has no such numbers, and
    Python's ``json`` would write the invalid tokens ``NaN``/``Infinity`` other readers refuse. Containers are
    copied (tuples become lists); everything else is returned as is."""
    if isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "shape", None) == () and
                                  getattr(obj.dtype, "kind", "") == "f"):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """``json.dumps`` of `json_safe` ``obj``: never a ``NaN``/``Infinity`` token (non-finite floats become null)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def write_json(path: str, obj, indent: int = 1) -> None:
    """Writes ``obj`` as indented JSON atomically; NaN and ±inf floats are written as ``null`` (`json_safe`): the
    file is always valid JSON."""
    data = (dumps(obj, indent=indent) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) atomically."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def eprint(message: str) -> None:
    """A progress or resume note on stderr, flushed (stdout stays for results)."""
    print(message, file=sys.stderr, flush=True)


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def progress_bar(progress: bool, total: int, desc: str, unit: str = "it", leave: bool = False):
    """A tqdm bar on stderr with ``update()``/``close()``, drawn on a terminal only: a redirected log gets no
    carriage returns or escape codes (the runs' per-epoch lines carry the progress there); a no-op when not
    ``progress``."""
    if not progress:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, disable=None)


def keras_verbose(progress: bool) -> int:
    """Keras ``fit`` verbosity: its progress bar (1) on a terminal only, else one line per epoch (2); Keras' bar
    writes bold escape codes and carriage returns a log file should not hold."""
    return 1 if progress and sys.stdout.isatty() else 2
