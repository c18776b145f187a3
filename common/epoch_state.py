"""Per-epoch training state shared by the search loops: a ``tf.train.Checkpoint`` of the given objects (kept two
deep) plus ``history.json`` (one record per finished epoch), written after every epoch and restored on a rerun."""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from common.checks import check_finite
from common.io import atomic_write


class EpochState:
    """``objects`` must include the ``epoch`` counter variable; no ``checkpoint_dir`` = nothing is saved."""

    def __init__(self, checkpoint_dir: str | None, epoch: tf.Variable, **objects):
        self.dir, self.epoch = checkpoint_dir, epoch
        self._objects = objects
        self._ckpt = tf.train.Checkpoint(epoch=epoch, **objects)
        self._manager = (tf.train.CheckpointManager(self._ckpt, checkpoint_dir, max_to_keep=2) if checkpoint_dir
                         else None)

    def restore(self) -> list[dict] | None:
        """Restores the latest checkpoint; returns the history up to its epoch, or None when there is none."""
        if not self._manager or not self._manager.latest_checkpoint:
            return None
        self._ckpt.restore(self._manager.latest_checkpoint).assert_existing_objects_matched()
        path = os.path.join(self.dir, "history.json")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return json.load(f)[: int(self.epoch.numpy())]

    def variables(self):
        """``(name, variable)`` of every variable the checkpoint holds (models, optimizers, counters)."""
        out = []
        for name, obj in self._objects.items():
            if isinstance(obj, tf.Variable):
                out.append((name, obj))
            else:
                out += [(f"{name} {getattr(v, 'path', v.name)}", v) for v in getattr(obj, "variables", [])]
        return out

    def save(self, history: list[dict]) -> None:
        if not self._manager:
            return
        text = json.dumps(history)
        atomic_write(os.path.join(self.dir, "history.json"), lambda f: f.write(text.encode()))
        self._manager.save(checkpoint_number=int(self.epoch.numpy()))


class ResumableLoop:
    """Mixin of custom training loops that keep their `EpochState` in ``self._state`` and the per-epoch records in
    ``self.history``: `restore` after building, `save` after every epoch."""

    _state: EpochState
    history: list
    # what to change, the end of the one line a diverged run stops with (`common.errors.Diverged`); the workflows
    # name their flags
    divergence: str = "lower the learning rate"

    def check_loss(self, value: float, epoch: int, step: int, what: str = "the loss") -> None:
        """`common.errors.Diverged` when a step's loss is NaN or infinite (``epoch``, ``step``: 1-based, as shown):
        the loop stops before the next save, so no checkpoint, weights or derived spec hold what followed."""
        check_finite(float(value), what, f"at epoch {epoch} step {step}", self.divergence)

    def check_weights(self, epoch: int) -> None:
        """`common.errors.Diverged` naming the first float variable of the checkpoint (weights, α, gates,
        optimizer slots) holding NaN or ±inf after ``epoch`` (1-based)."""
        for name, v in self._state.variables():
            a = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                check_finite(float("nan"), name, f"in epoch {epoch}", self.divergence)

    def restore(self) -> bool:
        """Restores the latest checkpoint (and history) if there is one; returns whether it did."""
        history = self._state.restore()
        if history is None:
            return False
        self.history = history
        return True

    def save(self) -> None:
        self._state.save(self.history)

    def finish_epoch(self, record: dict, step: int, writer=None, on_epoch=None, keys=None, prefix: str = "") -> None:
        """The end of every epoch of a loop: ``record`` joins the history, its numbers go to the TensorBoard
        ``writer`` at ``step`` (``keys``: only those; default every int or float that is neither a bool nor NaN; named
        ``prefix + key``), the checkpoint is saved, then ``on_epoch(self, record)`` runs. First every variable must be
        finite (`check_weights`): a diverged loop raises `common.errors.Diverged` and saves nothing."""
        self.check_weights(int(record.get("epoch", len(self.history) + 1)))
        self.history.append(record)
        if writer is not None:
            names = keys if keys is not None else [
                k for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
            with writer.as_default(step=step):
                for k in names:
                    tf.summary.scalar(f"{prefix}{k}", record[k])
        self.save()
        if on_epoch:
            on_epoch(self, record)
