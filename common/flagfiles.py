"""``--flagfile`` checked before absl reads it (`check_flagfiles`, called by `recipes.cli`): absl would read a FIFO
or /dev/zero until memory runs out, warn about a file that includes itself and go on, and ignore an empty value.
"""
from __future__ import annotations

import os

from common.errors import UsageError
from common.io import file_kind

FLAGFILE_MAX_BYTES = 1 << 20  # a flagfile is a few lines of flags; more is a wrong path (/dev/zero, a dataset)
_FLAGFILE_PREFIXES = ("--flagfile=", "-flagfile=")


def _read_flagfile(path: str, where: str) -> str:
    """The text of the flagfile ``path``: a non-empty path to a regular, readable UTF-8 file of at most
    `FLAGFILE_MAX_BYTES` (absl would read a FIFO or /dev/zero until memory runs out, and ignores an empty value);
    ``where`` names the flag in messages."""
    if not path:
        raise UsageError(f"{where}: empty; name a file of flags")
    try:
        kind = file_kind(path)
    except OSError as e:  # a symlink loop, a folder on the way that cannot be searched
        raise UsageError(f"{where}: cannot open it ({e.strerror or e})") from None
    if kind is None:
        raise UsageError(f"{where}: cannot open it (No such file or directory)")
    if kind == "directory":
        raise UsageError(f"{where}: is a directory, not a file of flags")
    if kind != "regular file":
        raise UsageError(f"{where}: is not a regular file (a {kind}); name a file of flags")
    size = os.path.getsize(path)
    if size > FLAGFILE_MAX_BYTES:
        raise UsageError(f"{where}: {size} bytes; a flagfile holds at most {FLAGFILE_MAX_BYTES} bytes")
    try:
        with open(path, "rb") as f:
            data = f.read(FLAGFILE_MAX_BYTES + 1)
    except OSError as e:
        raise UsageError(f"{where}: cannot read it ({e.strerror or e})") from None
    if len(data) > FLAGFILE_MAX_BYTES:
        raise UsageError(f"{where}: more than {FLAGFILE_MAX_BYTES} bytes; a flagfile holds at most that")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{where}: not UTF-8 text (byte {e.start})") from None


def _check_flagfile(path: str, where: str, stack: list[str]) -> None:
    """Checks the flagfile ``path`` and, recursively, every ``--flagfile=`` line in it as absl reads them (a line
    starting with the directive; the name stripped, ``~`` expanded, relative to the working directory); a file that
    includes itself, directly or not, is refused (absl warns and goes on without it)."""
    text = _read_flagfile(path, where)
    real = os.path.realpath(path)
    if real in stack:
        raise UsageError(f"{where}: includes itself (circular --flagfile: "
                         f"{' -> '.join(stack[stack.index(real):] + [real])})")
    stack.append(real)
    for n, line in enumerate(text.splitlines(), 1):
        for prefix in _FLAGFILE_PREFIXES:
            if line.startswith(prefix):
                sub = os.path.expanduser(line[len(prefix):].strip())
                _check_flagfile(sub, f"--flagfile={sub} (line {n} of {path})", stack)
    stack.pop()


def check_flagfiles(args) -> None:
    """Every ``--flagfile`` of the command line ``args`` (without the program name), nested ones included, before
    absl reads them: `UsageError` naming the file otherwise. Scans as absl does, up to ``--``."""
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a in ("--flagfile", "-flagfile"):
            if i + 1 >= len(args):
                raise UsageError("--flagfile: needs a file name")
            _check_flagfile(os.path.expanduser(args[i + 1]), f"--flagfile={args[i + 1]}", [])
            i += 1
        else:
            for prefix in _FLAGFILE_PREFIXES:
                if isinstance(a, str) and a.startswith(prefix):
                    value = os.path.expanduser(a[len(prefix):].strip())
                    _check_flagfile(value, f"--flagfile={value}", [])
        i += 1
