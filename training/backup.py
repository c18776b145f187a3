"""Resumable training state of Keras ``fit`` runs: a ``BackupAndRestore`` that survives a kill at any time."""
from __future__ import annotations

import json
import os

from common.io import atomic_write


def backup_callback(backup_dir: str, save_every: int, steps_per_epoch: int, announce=None):
    """A ``keras.callbacks.BackupAndRestore`` that also keeps the per-epoch history and survives a kill at any time.

    Differences from the stock callback (Keras 3.15), each needed for "kill, rerun the same command, get the same
    run":

    - it saves every ``save_every`` steps *and* at every epoch end (so a kill between epochs loses nothing);
    - the weights file and the metadata are written to temp names and renamed (a kill during a save leaves the
      previous checkpoint intact);
    - the metadata carries the history of the completed epochs, the optimizer step and the training time so far,
      and the epoch counter stays right after a resume (the stock callback writes epoch 0 for mid-epoch saves of a
      resumed run);
    - Keras restores at epoch granularity: after a kill mid-epoch the interrupted epoch is replayed from its start
      with the checkpoint's weights and optimizer slots, and the optimizer step (which drives the learning-rate
      schedule) is set back to the start of that epoch, so the schedule still ends where it should;
    - the checkpoint is not deleted at the end of ``fit``: the caller deletes it once the final outputs are written.

    ``announce(message)`` is called once when a checkpoint is restored.
    """
    import keras


    class TrainingBackup(keras.callbacks.BackupAndRestore):
        def __init__(self):
            super().__init__(backup_dir, save_freq=save_every, delete_checkpoint=False)
            self.steps_per_epoch = steps_per_epoch
            self.history: list[dict] = []
            self.restored: dict | None = None
            self.elapsed_before = 0.0
            self._since_save = 0
            self._steps_in_epoch = 0
            self._clock = None

        # -- restore
        def on_train_begin(self, logs=None):
            import time
            self._clock = time.monotonic()
            if not os.path.exists(self._weights_path):
                return  # fresh run (the weights are renamed into place before the metadata of a save)
            self._load_model()  # weights, optimizer slots and step; model._initial_epoch from the metadata
            meta = {"epoch": 0}
            if os.path.exists(self._training_metadata_path):
                with open(self._training_metadata_path) as f:
                    meta = json.load(f)
            epoch = int(meta["epoch"])
            self._current_epoch = epoch
            self.history = [h for h in meta.get("history", []) if h["epoch"] < epoch]
            self.elapsed_before = float(meta.get("elapsed_s", 0.0))
            step = int(meta.get("iterations", epoch * self.steps_per_epoch))
            replayed = int(meta.get("steps_in_epoch", 0))
            if self.model.optimizer is not None:
                self.model.optimizer.iterations.assign(epoch * self.steps_per_epoch)
            self.restored = {"from_epoch": epoch, "checkpoint_step": step, "replayed_steps": replayed,
                             "elapsed_before_s": round(self.elapsed_before, 3)}
            if announce:
                note = f"; replaying the {replayed} steps done in epoch {epoch + 1}" if replayed else ""
                announce(f"resuming from the checkpoint in {backup_dir}: {epoch} epoch(s) done, optimizer step "
                         f"{step}{note}")

        # -- save
        def on_epoch_begin(self, epoch, logs=None):
            self._current_epoch = epoch
            self._steps_in_epoch = 0

        def on_train_batch_end(self, batch, logs=None):
            self._steps_in_epoch += 1
            self._since_save += 1
            if self._since_save >= self.save_freq:
                self._save_model()

        def on_epoch_end(self, epoch, logs=None):
            entry = {"epoch": epoch}
            for k, v in (logs or {}).items():
                try:
                    entry[k] = float(v)
                except (TypeError, ValueError):
                    pass
            opt = self.model.optimizer
            if opt is not None:
                entry["lr_end"] = float(keras.ops.convert_to_numpy(opt.learning_rate))
            self.history.append(entry)
            self._current_epoch = epoch + 1
            self._steps_in_epoch = 0
            self._save_model()

        def elapsed(self) -> float:
            import time
            return self.elapsed_before + (time.monotonic() - self._clock if self._clock else 0.0)

        def _save_model(self):
            self._since_save = 0
            os.makedirs(self.backup_dir, exist_ok=True)
            tmp = os.path.join(self.backup_dir, "tmp-latest.weights.h5")
            self.model.save_weights(tmp, overwrite=True)
            os.replace(tmp, self._weights_path)
            opt = self.model.optimizer
            meta = {"epoch": self._current_epoch, "steps_in_epoch": self._steps_in_epoch,
                    "iterations": int(keras.ops.convert_to_numpy(opt.iterations)) if opt is not None else None,
                    "elapsed_s": self.elapsed(), "history": self.history}
            text = json.dumps(meta)
            atomic_write(self._training_metadata_path, lambda f: f.write(text.encode()))

        def on_train_end(self, logs=None):
            pass  # the caller removes backup_dir after writing the outputs

    return TrainingBackup()


def divergence_guard(hint: str):
    """A Keras callback (put it first in ``fit``'s list, before the backup) that raises `common.errors.Diverged`
    — ``"the loss became NaN at epoch E step S: <hint>"`` — as soon as the training loss is NaN or infinite
    (Keras' ``TerminateOnNaN`` only stops ``fit``, which then returns as if it finished), and at every epoch end when
    a weight is. It raises before the backup callback saves that step or epoch, so no checkpoint holds NaN weights;
    the caller writes no outputs."""
    import keras
    import numpy as np

    from common.checks import check_finite

    class DivergenceGuard(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None:
                check_finite(float(np.asarray(loss)), "the loss", f"at epoch {self._epoch + 1} step "
                             f"{batch + 1}", hint)

        def on_epoch_end(self, epoch, logs=None):
            for v in self.model.weights:
                a = np.asarray(keras.ops.convert_to_numpy(v))
                if a.dtype.kind == "f" and not np.isfinite(a).all():
                    check_finite(float("nan"), f"weight {v.path}", f"in epoch {epoch + 1}", hint)
            loss = (logs or {}).get("val_loss")
            if loss is not None:
                check_finite(float(np.asarray(loss)), "the validation loss", f"after epoch {epoch + 1}",
                             hint)

    return DivergenceGuard()
