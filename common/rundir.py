"""One run directory for every long command (training, searches, detection fine-tuning): the settings that identify
the run, atomic JSON outputs, and resume.

A run directory holds a settings file (``settings.json`` unless named otherwise) written when the run starts. A rerun
of the same command with the same settings resumes from the run's checkpoint; a rerun with other settings is refused
with one line naming the keys that differ (`SettingsMismatch`, an `InputError`) — before TensorFlow is imported.
The per-epoch checkpoint of custom training loops is `common.epoch_state.EpochState` (`RunDir.epoch_state`); Keras
``fit`` runs use ``training.backup.backup_callback`` in the same directory.
"""
from __future__ import annotations

import json
import os

from common.errors import InputError
from common.io import remove_partials, write_json


class SettingsMismatch(InputError):
    """The directory holds a run made with other settings."""


class RunDir:
    """``path``: the run directory (``--out_dir``); ``settings``: JSON-able values that must match to resume.

    Args:
        path: the directory; created by `start`, not by the constructor (validation writes nothing).
        settings: the identity of the run.
        settings_file: file name of the settings inside ``path``.
        flag: how the user names ``path`` in messages.
        defaults: values assumed for keys missing from an older settings file.
        files, dirs: the names (relative to ``path``) the command writes as files and as folders, declared once
            per command (its ``OUT_FILES``/``OUT_DIRS``); `check` refuses one taken by the other kind of file.
    """

    def __init__(self, path: str, settings: dict, settings_file: str = "settings.json", flag: str = "--out_dir",
                 defaults: dict | None = None, files=(), dirs=()):
        self.path, self.settings, self.flag = path, dict(settings), flag
        self.files, self.dirs = tuple(files), tuple(dirs)
        self.settings_file = os.path.join(path, settings_file)
        self.defaults = dict(defaults or {})

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def exists(self) -> bool:
        """Whether a run was started here (its settings file exists)."""
        return os.path.exists(self.settings_file)

    def saved_settings(self) -> dict | None:
        """The settings of the run already in the directory, or None."""
        if not self.exists():
            return None
        try:
            with open(self.settings_file) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{self.settings_file}: unreadable ({e}); remove it or use a new {self.flag}") from None
        if not isinstance(saved, dict):
            raise InputError(f"{self.settings_file}: not a settings object; remove it or use a new {self.flag}")
        return {**self.defaults, **saved}

    def check(self, keys=None, what: str = "a run") -> None:
        """Raises `SettingsMismatch` when the directory holds a run whose settings differ on ``keys`` (default:
        all of this run's settings); `common.checks.check_out_dir` (with ``files``/``dirs``) first. Reads only;
        TensorFlow-free."""
        from common.checks import check_out_dir
        check_out_dir(self.path, self.flag, own=os.path.basename(self.settings_file), files=self.files, dirs=self.dirs)
        saved = self.saved_settings()
        if saved is None:
            return
        foreign = sorted(set(saved) - set(self.settings) - set(self.defaults))
        if foreign:  # e.g. search_fgnas into a search_metakernel run: both write search_settings.json
            raise SettingsMismatch(f"{self.flag}={self.path} holds a run of another command (its settings have "
                                   f"{', '.join(foreign[:4])}{', …' if len(foreign) > 4 else ''}, which this command "
                                   f"does not); use a new {self.flag}")
        keys = self.settings if keys is None else keys
        diff = sorted(k for k in keys if saved.get(k) != self.settings.get(k))
        if diff:
            raise SettingsMismatch(f"{self.flag}={self.path} holds {what} with other settings ({', '.join(diff)}); "
                                   f"rerun with the same flags to resume, or use a new {self.flag}")

    def start(self) -> None:
        """Creates the directory, removes the temp files of atomic writes a killed run left (`remove_partials`) and
        writes the settings (atomically)."""
        os.makedirs(self.path, exist_ok=True)
        remove_partials(self.path)
        write_json(self.settings_file, self.settings)

    def write_json(self, name: str, obj) -> str:
        """Writes ``obj`` to ``path/name`` atomically; returns the path."""
        out = self.file(name)
        write_json(out, obj)
        return out

    def epoch_state(self, epoch, subdir: str = "checkpoints", **objects):
        """The per-epoch checkpoint (``tf.train.Checkpoint`` of ``objects`` + history) of a custom loop."""
        from common.epoch_state import EpochState
        return EpochState(self.file(subdir), epoch, **objects)
