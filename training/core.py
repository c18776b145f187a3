"""Helpers shared by ``recipes.train`` and ``recipes.evaluate``.

Everything above the "Keras" section runs without TensorFlow (validation happens before TF is imported, so bad input
gives one line on stderr). The Keras section builds the resumable backup callback of ``recipes.train``.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from common.errors import InputError

CLASSIFIER_PREFIX = "classifier/"


# ---------------------------------------------------------------------------------------------------------------
# Without TensorFlow


def write_json(path: str, obj) -> None:
    """Writes ``obj`` as indented JSON atomically (temp file + rename)."""
    from common.io import atomic_write
    text = json.dumps(obj, indent=1, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def resolve_weights(spec, weights: str | None) -> str | None:
    """The ``.npz`` path named by ``--weights``: '' → None (random init), a ``.npz`` path, or a zoo tag.

    Raises:
        InputError: the ``.npz`` file does not exist.
        ZooError: unknown tag for this model, or a zoo weights file that fails its sha256 check.
    """
    if not weights:
        return None
    if weights.endswith(".npz") or os.sep in weights:
        if not os.path.isfile(weights):
            raise InputError(f"--weights={weights}: no such file")
        return weights
    from zoo import weights_path
    return weights_path(spec.name, weights)


def read_weights(path: str) -> dict[str, np.ndarray]:
    """The arrays of a weights ``.npz`` (WeightsError when unreadable), checked to be keyed ``layer/variable``."""
    from models.weights import WeightsError, read_npz
    arrays = read_npz(path)
    if not arrays:
        raise WeightsError(f"{path}: holds no arrays")
    bad = [k for k in arrays if "/" not in k]
    if bad:
        raise WeightsError(f"{path}: key {bad[0]!r} is not '<layer>/<variable>' (not a weights file of this zoo)")
    return arrays


def weights_classes(arrays: dict[str, np.ndarray]) -> int | None:
    """Output width of the classifier in a weights file, or None when it has no ``classifier/kernel``."""
    kernel = arrays.get(CLASSIFIER_PREFIX + "kernel")
    return None if kernel is None or kernel.ndim != 2 else int(kernel.shape[-1])


# ---------------------------------------------------------------------------------------------------------------
# With a built Keras model


def load_init_weights(model, arrays: dict[str, np.ndarray], source: str) -> dict:
    """Sets ``model``'s weights from ``arrays`` by layer name; skips the classifier when its shape differs.

    Every other weight must be present with the model's shape (nothing is assigned otherwise). The classifier is
    skipped (left at its fresh initialisation) when the file's classifier shapes differ from the model's (another
    class count) or the file has none; this is how a zoo checkpoint or a search's ``derived_init.npz`` seeds a run
    on a dataset with another number of classes.

    Returns:
        ``{"loaded": number of arrays assigned, "skipped": [keys left at initialisation]}``.

    Raises:
        WeightsError: a non-classifier weight is missing or has another shape.
    """
    from models.weights import assign, named_weights
    current = named_weights(model)
    skipped = []
    merged = dict(arrays)
    for key, value in current.items():
        if not key.startswith(CLASSIFIER_PREFIX):
            continue
        if key not in arrays or tuple(arrays[key].shape) != tuple(value.shape):
            merged[key] = value
            skipped.append(key)
    if skipped:  # all classifier weights or none: a half-loaded classifier makes no sense
        skipped = sorted(k for k in current if k.startswith(CLASSIFIER_PREFIX))
        merged.update({k: current[k] for k in skipped})
    assign(model, merged, source=source)
    return {"loaded": len(current) - len(skipped), "skipped": skipped}


# ---------------------------------------------------------------------------------------------------------------
# Keras: resumable training state


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

    from common.io import atomic_write

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


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def recalibrate_bn(model, batches) -> int:
    """Precise BatchNorm (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): sets the moving mean and variance of
    every *trainable* ``BatchNormalization`` layer of the functional ``model`` to the exact average of its
    training-mode batch statistics over ``batches`` (an iterable of input batches), instead of the exponential average
    the training steps left behind — which lags far behind the weights in short, high-learning-rate runs.

    Frozen layers (``trainable=False``) run in inference mode during training too and are left alone. Each layer sees
    what it sees in a training step (upstream layers normalise with batch statistics). The variance is Keras' biased
    batch variance, averaged. Returns the number of batches used (0: nothing changed). Called repeatedly, use
    :class:`BNRecalibrator` (it builds the probe graph once per set of trainable layers).
    """
    return BNRecalibrator(model)(batches)


class BNRecalibrator:
    """``recalibrate_bn`` for repeated use: the probe model and its traced function are rebuilt only when the set of
    trainable BN layers changes (e.g. when the backbone is unfrozen)."""

    def __init__(self, model):
        self.model, self._key, self._fn = model, None, None

    def _moments_fn(self, bns):
        import keras
        import tensorflow as tf
        probe = keras.Model(self.model.inputs, [layer.input for layer in bns])

        @tf.function
        def moments(x):
            outs = probe(x, training=True)  # updates the moving statistics as a side effect: overwritten after
            res = []
            for layer, o in zip(bns, outs):
                axis = layer.axis % len(o.shape)
                res.append(tf.nn.moments(tf.cast(o, tf.float32), [a for a in range(len(o.shape)) if a != axis]))
            return res
        return moments

    def __call__(self, batches) -> int:
        import keras
        bns = [layer for layer in self.model.layers
               if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
        if not bns:
            return 0
        key = tuple(id(layer) for layer in bns)
        if key != self._key:
            self._key, self._fn = key, self._moments_fn(bns)
        saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in bns]
        sums, n = None, 0
        for x in batches:
            stats = [(m.numpy().astype(np.float64), v.numpy().astype(np.float64)) for m, v in self._fn(x)]
            sums = stats if sums is None else [(a + m, b + v) for (a, b), (m, v) in zip(sums, stats)]
            n += 1
        final = saved if n == 0 else [((m / n).astype(np.float32), (v / n).astype(np.float32)) for m, v in sums]
        for layer, (m, v) in zip(bns, final):
            layer.moving_mean.assign(m)
            layer.moving_variance.assign(v)
        return n
