"""Training the SPOS supernet (uniform or uniform-constraint single-path sampling) and evaluating candidates on it
with BN recalibration.

Training (paper §3.2–3.3): every step samples one path — uniformly, or uniformly among paths that satisfy the
constraints (the paper's default) — and updates only that path. There are no architecture parameters. The optimizer
is :class:`SinglePathSGD`: SGD with Nesterov momentum whose per-variable update (momentum *and* weight decay) is
skipped for variables the sampled path did not touch, as PyTorch's SGD skips parameters without a gradient in the
official code; a Keras SGD would keep moving unsampled choices with stale momentum. The learning rate decays
linearly to 0 (paper), label smoothing 0.1, weight decay on conv/FC kernels only.

The loop runs under a ``tf.distribute`` strategy, checkpoints every epoch (model, optimizer, step, epoch, history)
and resumes from the last checkpoint; the path sampler is reseeded from ``(seed, epoch)`` so a resumed run samples
the same paths as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from common.epoch_state import EpochState, ResumableLoop
from common.io import eprint
from search import PACKAGE
from search import spos as sp
from search.spos_net import SposSupernet


@keras.saving.register_keras_serializable(package=PACKAGE)
class SinglePathSGD(keras.optimizers.Optimizer):
    """SGD (Nesterov momentum, L2 weight decay on kernels) that leaves a variable and its momentum untouched when
    the sampled path did not use it.

    Which variables the path used comes from :meth:`path` (the trainer knows it from the architecture: a variable
    belongs to one block choice, or to the stem/head/classifier that every path runs); outside that context, a
    variable whose gradient is all zero counts as unused. Inside it, a used variable is updated even when its
    gradient happens to be zero (a dead ReLU), as PyTorch's SGD updates every parameter that has a gradient tensor.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, nesterov=True, decay=4e-5, name="single_path_sgd", **kw):
        super().__init__(learning_rate=learning_rate, name=name, **kw)
        self.momentum, self.nesterov, self.decay = float(momentum), bool(nesterov), float(decay)
        self._active, self._gates = None, {}

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]

    @contextlib.contextmanager
    def path(self, active):
        """``apply_gradients`` inside this context takes variable ``i``'s activity (``i`` in the order given to
        :meth:`build`) from ``active[i]``: ``True``/``False`` (``False``: no op at all), or a scalar bool tensor
        (when false, the variable's gradient must be zero, as an unsampled ``tf.switch_case`` branch's is).
        Variables of one block choice should share one tensor: the gates are then computed once per choice, not per
        variable (the supernet holds ~1,000 variables; per-variable scalar ops were a measurable part of a step)."""
        self._active, self._gates = active, {}
        try:
            yield self
        finally:
            self._active, self._gates = None, {}

    def _gate(self, active, learning_rate, dtype, cache=True):
        """``(lr, momentum, decay)`` for an active flag: constants when it is ``True``; for a tensor, lr 0,
        momentum 1 and no decay when it is false, which leaves the variable and its momentum bit-for-bit unchanged.
        Cached per (flag, learning rate) within one :meth:`path` context."""
        key = (id(active), id(learning_rate), dtype)
        gates = self._gates.get(key)
        if gates is None:
            lr = tf.cast(learning_rate, dtype)
            if active is True:
                gates = (lr, tf.constant(self.momentum, dtype), self.decay)
            else:
                on = tf.cast(active, dtype)
                gates = (lr * on, tf.where(active, tf.constant(self.momentum, dtype), tf.constant(1.0, dtype)),
                         self.decay * on)
            if cache:
                self._gates[key] = gates
        return gates

    def update_step(self, gradient, variable, learning_rate):
        """PyTorch's SGD: ``m ← μ·m + g``, ``w ← w − lr·(g + μ·m)`` (Nesterov) or ``w ← w − lr·m``, with
        ``g += decay·w`` for kernels — as one fused ``ApplyMomentum`` op. An inactive variable (tensor flag) runs
        the same op with ``lr = 0``, ``μ = 1`` and no decay term, which leaves it and ``m`` unchanged."""
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        active = None if self._active is None else self._active[index]
        if active is False:
            return
        g = tf.cast(gradient, dtype)
        given = active is not None
        if not given:
            active = tf.reduce_any(tf.not_equal(g, 0.0))
        lr, momentum, decay = self._gate(active, learning_rate, dtype, cache=given)
        if len(variable.shape) > 1 and self.decay:
            g = g + decay * variable
        tf.raw_ops.ResourceApplyMomentum(
            var=variable.handle, accum=self.momentums[index].handle, lr=lr, grad=g, momentum=momentum,
            use_locking=False, use_nesterov=self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov, "decay": self.decay}


EXECUTIONS = ("eager", "graph")


@dataclass
class SposConfig:
    """Supernet training hyper-parameters (recorded in the run's summary)."""
    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    sampling: str = "constraint"  # or "uniform"
    execution: str = "eager"  # or "graph"
    seed: int = 0

    def __post_init__(self):
        if self.sampling not in ("uniform", "constraint"):
            raise ValueError(f"sampling must be 'uniform' or 'constraint', got {self.sampling!r}")
        if self.execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {self.execution!r}")


class SposTrainer(ResumableLoop):
    """Trains ``model`` (a :class:`SposSupernet`) by single-path sampling under ``strategy``.

    Two executions of the same step (``config.execution``):

    - ``"eager"``: Python picks each block's branch and runs it as that branch's own compiled function; the tape
      sees only the sampled path, so unsampled variables get no gradient at all. Starts in seconds (a branch is
      compiled the first time it is sampled); per step it pays one function dispatch per block. One device only.
    - ``"graph"``: the whole step is one ``tf.function``; blocks select their branch with ``tf.switch_case``
      (still only the sampled branch executes; unsampled variables get zero gradients, and
      :class:`SinglePathSGD` skips them, told which block choices were sampled). Tracing the gradient of every case
      op costs minutes at full depth, once; after that it is the fastest form, and it runs under any
      ``tf.distribute`` strategy.

    Args:
        constraints: used when ``config.sampling == "constraint"``.
        latency: optional latency model (``predict(spec) -> ms``) for a latency constraint.
        checkpoint_dir: the training state lives here; an existing checkpoint is resumed.
    """

    def __init__(self, model: SposSupernet, config: SposConfig, constraints: sp.Constraints | None = None,
                 latency=None, checkpoint_dir: str | None = None, strategy=None, fixed: dict | None = None):
        """``fixed``: fields every sampled path holds (``search.spos.fix``; e.g. a whole network's block choices
        and channel ratios, so that only its bit widths are sampled)."""
        self.fixed = fixed
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model, self.config, self.space = model, config, model.space
        self.constraints, self.latency = constraints, latency
        self.vars = model.weight_variables()
        self._owners = model.variable_choices()
        with self.strategy.scope():
            self.lr = tf.Variable(config.lr, trainable=False, dtype=tf.float32, name="lr")
            self.opt = SinglePathSGD(lambda: self.lr, config.momentum, True, config.weight_decay)
            self.opt.build(self.vars)
        self.loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="spos_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="spos_epoch")
        self.history: list[dict] = []
        self.checkpoint_dir = checkpoint_dir
        self._state = EpochState(checkpoint_dir, self.epoch, model=model, opt=self.opt, step=self.step)
        replicas = self.strategy.num_replicas_in_sync
        if config.execution == "eager":
            if replicas > 1:
                raise ValueError("execution='eager' runs on one device; use execution='graph' with a "
                                 f"{replicas}-replica strategy")
            zeros = [tf.zeros(v.shape, v.dtype) for v in self.vars]

            @tf.function
            def apply(grads, used):
                with self.opt.path(tf.unstack(used)):
                    self.opt.apply_gradients(zip(grads, self.vars))

            def train_step(x, y, arch):
                with tf.GradientTape() as tape:
                    logits = self.model(x, arch, mode="train")
                    ce = self.loss(tf.one_hot(tf.cast(y, tf.int32), self.space.classes), logits)
                grads = tape.gradient(ce, self.vars)  # None: not on the path
                used = tf.constant([g is not None for g in grads])
                apply([z if g is None else g for g, z in zip(grads, zeros)], used)
                return ce, self._accuracy(y, logits)
        else:
            @tf.function
            def train_step(x, y, arch):
                outs = self.strategy.run(self._step_fn, (x, y, arch))
                return [self.strategy.reduce("SUM", o, axis=None) / replicas for o in outs]
        self.train_step = train_step

    @staticmethod
    def _accuracy(y, logits):
        return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)),
                                      tf.float32))

    def _step_fn(self, x, y, arch):
        with tf.GradientTape() as tape:
            logits = self.model(x, arch, mode="train")
            ce = self.loss(tf.one_hot(tf.cast(y, tf.int32), self.space.classes), logits)
            loss = ce / self.strategy.num_replicas_in_sync
        grads = tape.gradient(loss, self.vars)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.vars)]
        with self.opt.path(self._path_flags(arch)):
            self.opt.apply_gradients(zip(grads, self.vars))
        return ce, self._accuracy(y, logits)

    def _path_flags(self, arch):
        """Per variable: ``True`` (stem, head, classifier: on every path) or whether ``arch`` samples its block
        choice — one bool tensor per block choice, shared by that choice's variables."""
        flags = {}
        for owner in self._owners:
            if owner is not None and owner not in flags:
                flags[owner] = tf.equal(arch[owner[0], 0], owner[1])
        return [True if owner is None else flags[owner] for owner in self._owners]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        if self.config.sampling == "constraint" and self.constraints is not None and self.constraints.limits():
            return sp.sample(self.space, rng, self.constraints, self.latency, fixed=self.fixed)
        return sp.fix(sp.uniform(self.space, rng), self.fixed)

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self, train_ds, steps_per_epoch: int, writer=None, progress=None, on_epoch=None) -> list[dict]:
        """Trains for ``config.epochs`` epochs of ``steps_per_epoch`` steps on the repeated ``train_ds``."""
        cfg = self.config
        self.restore()
        total = cfg.epochs * steps_per_epoch
        it = iter(train_ds if self.config.execution == "eager"
                  else self.strategy.experimental_distribute_dataset(train_ds))
        bar = progress(total) if progress else None
        if bar is not None:
            bar.update(int(self.step.numpy()))
        traced = False
        while int(self.epoch.numpy()) < cfg.epochs:
            epoch = int(self.epoch.numpy())
            rng = np.random.default_rng([cfg.seed, epoch])
            t0, sums, sampled = time.time(), np.zeros(3), np.zeros(len(self.space.choices))
            for _ in range(steps_per_epoch):
                self.lr.assign(cfg.lr * (1.0 - int(self.step.numpy()) / total))
                arch = self.sample(rng)
                sampled += np.bincount(arch[:, 0], minlength=len(self.space.choices))
                first = cfg.execution == "graph" and not traced
                if first:  # tracing every block choice into one graph takes a while and shows no progress
                    eprint("tracing the supernet's training step into one graph (once per process) …")
                    t_trace = time.time()
                ce, acc = self.train_step(*next(it), tf.constant(arch))
                if first:
                    traced = True
                    eprint(f"traced in {time.time() - t_trace:.0f} s")
                sums += [float(ce), float(acc), 1]
                self.check_loss(ce, epoch + 1, int(sums[2]), "the cross-entropy")
                self.step.assign_add(1)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(ce=f"{float(ce):.3f}")
            self.epoch.assign_add(1)
            record = {"epoch": epoch + 1, "step": int(self.step.numpy()), "lr": float(self.lr.numpy()),
                      "train_ce": sums[0] / sums[2], "train_acc": sums[1] / sums[2], "seconds": time.time() - t0,
                      "choice_frequency": (sampled / sampled.sum()).round(4).tolist()}
            self.finish_epoch(record, epoch + 1, writer, on_epoch, keys=("train_ce", "train_acc", "lr"),
                              prefix="supernet/")
        if bar is not None:
            bar.close()
        return self.history


class CandidateEvaluator:
    """Top-1 of a path on the validation arrays after recalibrating BN on ``recal_images`` (paper §3.4).

    Both sets are held in memory and cut into fixed batches, so one traced graph per mode serves every candidate.
    """

    def __init__(self, model: SposSupernet, recal_images: np.ndarray, val_images: np.ndarray,
                 val_labels: np.ndarray, batch_size: int = 256, execution: str = "eager"):
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        self.model = model
        split = lambda a: [tf.constant(a[i:i + batch_size]) for i in range(0, len(a), batch_size)]  # noqa: E731
        self.recal = split(recal_images)
        self.val = list(zip(split(val_images), split(val_labels.astype(np.int32))))
        self.recal_images, self.val_images = len(recal_images), len(val_images)

        def recal(x, a):
            model(x, a, mode="recal")

        def correct(x, y, a):
            pred = tf.argmax(model(x, a, mode="eval"), -1, output_type=tf.int32)
            return tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.int32))
        if execution == "graph":  # one trace (slow at full depth) serves every candidate
            recal, correct = (tf.function(f, reduce_retracing=True) for f in (recal, correct))
        self._recal, self._correct = recal, correct

    def recalibrate(self, arch) -> None:
        a = tf.constant(np.asarray(arch, np.int32))
        self.model.reset_recal()
        for x in self.recal:
            self._recal(x, a)

    def accuracy(self, arch) -> float:
        a = tf.constant(np.asarray(arch, np.int32))
        correct = sum(int(self._correct(x, y, a)) for x, y in self.val)
        return correct / max(self.val_images, 1)

    def __call__(self, arch) -> float:
        self.recalibrate(arch)
        return self.accuracy(arch)
