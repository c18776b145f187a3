"""Differentiable meta-kernel search: weights and α on separate optimizers, Gumbel-softmax with an annealed
temperature, and the cost-aware loss of Eq. 6–7 steering E[cost] to a target.

Per step (first-order, as the paper and DARTS' first-order variant): one weight update on a training batch
(cross-entropy, SGD with momentum and weight decay, α fixed), then one α update on a batch of the held-out split
(cross-entropy + λ·L_cost, Adam, weights fixed). τ decays exponentially from ``tau_start`` to ``tau_end`` over the
search. The search checkpoints every epoch (model, both optimizers, step, history) and resumes from the last one.

The cost term (:func:`cost_loss`) is a two-sided log penalty around the target T with a slack band η:
``d = |log(E/T)|``, ``L = d + max(0, d − log(1+η)) / η``. Inside ``[T/(1+η), T(1+η)]`` it pulls gently (slope 1 in
log space); outside, a barrier 1/η times steeper pushes the architecture back. The paper's exact Eq. 7 was not
available when this was written; this form keeps its ingredients (log of expected cost, target, slack η, weight
λ = 2, η = 0.1 by default) and, unlike a pure dead zone, keeps pulling toward T inside the band.

Costs are pluggable: ``cost_fn(model) -> tensor`` (default E[MACs] from :func:`search.supernet.expected_cost`);
a latency model can supply its own expected latency through the same argument.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from common.epoch_state import EpochState, ResumableLoop
from search import supernet as sn
from search.metakernel_space import SearchSpace


def cost_loss(expected, target: float, eta: float = 0.1):
    """L_cost of Eq. 7 (see the module docstring): 0 at E = T, log-barrier outside ``(1 ± η)``."""
    d = tf.abs(tf.math.log(expected / target))
    return d + tf.nn.relu(d - math.log1p(eta)) / eta


@dataclass
class SearchConfig:
    """Hyper-parameters of one search (all recorded in the derived spec's provenance)."""
    target: float
    epochs: int = 10
    lam: float = 2.0
    eta: float = 0.1
    tau_start: float = 5.0
    tau_end: float = 0.5
    w_lr: float = 0.05
    w_momentum: float = 0.9
    w_weight_decay: float = 4e-5
    a_lr: float = 3e-3
    a_weight_decay: float = 1e-3
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    seed: int = 0

    def tau(self, progress: float) -> float:
        """Exponential annealing: τ_start at progress 0, τ_end at 1."""
        p = min(max(progress, 0.0), 1.0)
        return self.tau_start * (self.tau_end / self.tau_start) ** p


class MetaKernelSearch(ResumableLoop):
    """Runs the bilevel search on a supernet built by :func:`search.supernet.build_supernet`.

    Args:
        model: the supernet (``dw_mode="meta"`` or ``"multi"``).
        space: its search space.
        config: hyper-parameters.
        cost_fn: ``model -> E[cost]`` tensor (default: expected MACs).
        checkpoint_dir: where the search state lives; an existing checkpoint there is resumed.
        strategy: the ``tf.distribute`` strategy the model was built under (default: the current one). Steps run
            per replica on ``strategy.experimental_distribute_dataset`` batches; gradients are summed across
            replicas of per-replica means divided by the replica count (the global-batch mean).
    """

    def __init__(self, model: keras.Model, space: SearchSpace, config: SearchConfig, cost_fn=None,
                 checkpoint_dir: str | None = None, strategy=None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model, self.space, self.config = model, space, config
        self.supernet = sn.MetaKernelSupernet(model, space)
        self.cost_fn = cost_fn or self.expected_macs
        self.w_vars, self.a_vars = sn.weight_variables(model), sn.arch_variables(model)
        if not self.a_vars:
            raise ValueError("the model has no architecture parameters (dw_mode='fixed'?)")
        with self.strategy.scope():
            self.w_opt = keras.optimizers.SGD(config.w_lr, momentum=config.w_momentum, nesterov=True)
            self.a_opt = keras.optimizers.Adam(config.a_lr, beta_1=0.5, beta_2=0.999)
            self.w_opt.build(self.w_vars)
            self.a_opt.build(self.a_vars)
        self.loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="search_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="search_epoch")
        self.history: list[dict] = []
        self.checkpoint_dir = checkpoint_dir
        self._state = EpochState(checkpoint_dir, self.epoch, model=model, w_opt=self.w_opt, a_opt=self.a_opt,
                                 step=self.step)
        self._classes = int(model.get_layer("classifier").units)
        self._w_step = self._distributed(self._w_step_fn)
        self._a_step = self._distributed(self._a_step_fn)
        self._eval_step = tf.function(self._eval_fn)

    def _distributed(self, fn):
        """``fn`` run on every replica; its outputs averaged over replicas."""
        replicas = self.strategy.num_replicas_in_sync

        @tf.function
        def step(x, y):
            outs = self.strategy.run(fn, (x, y))
            return [self.strategy.reduce("SUM", o, axis=None) / replicas for o in outs]
        return step

    def expected_macs(self, model):
        """The default cost: E[MACs] of the supernet (differentiable in α)."""
        return sn.expected_cost(model, self.space)[0]

    # --- steps -------------------------------------------------------------------------------------------------
    def _ce(self, y, logits):
        return self.loss(tf.one_hot(y, self._classes), logits)

    def _w_step_fn(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            ce = self._ce(y, logits)
            decay = tf.add_n([tf.reduce_sum(v ** 2) for v in self.w_vars if len(v.shape) > 1])
            loss = (ce + 0.5 * self.config.w_weight_decay * decay) / self.strategy.num_replicas_in_sync
        grads = tape.gradient(loss, self.w_vars)
        self.w_opt.apply_gradients(zip(grads, self.w_vars))
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)),
                                     tf.float32))
        return ce, acc

    def _a_step_fn(self, x, y):
        with tf.GradientTape() as tape:
            ce = self._ce(y, self.model(x, training=True))
            expected = self.cost_fn(self.model)
            c_loss = cost_loss(expected, self.config.target, self.config.eta)
            decay = tf.add_n([tf.reduce_sum(a ** 2) for a in self.a_vars])
            loss = ce + self.config.lam * c_loss + 0.5 * self.config.a_weight_decay * decay
            loss = loss / self.strategy.num_replicas_in_sync
        grads = tape.gradient(loss, self.a_vars)
        self.a_opt.apply_gradients(zip(grads, self.a_vars))
        return ce, c_loss, expected

    def _eval_fn(self, x, y):
        logits = self.model(x, training=False)  # argmax architecture
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)),
                                     tf.float32))

    # --- the loop ----------------------------------------------------------------------------------------------
    def evaluate(self, ds) -> float:
        """Top-1 of the argmax architecture (supernet weights, inference BN) on ``ds``."""
        correct, n = 0.0, 0
        for x, y in ds:
            correct += float(self._eval_step(x, y))  # single device: evaluation batches are small
            n += int(y.shape[0])
        return correct / max(n, 1)

    def run(self, train_ds, arch_ds, steps_per_epoch: int, val_ds=None, writer=None, progress=None, on_epoch=None):
        """Searches for ``config.epochs`` epochs (resuming from ``checkpoint_dir``); returns the history.

        Args:
            train_ds: repeated ``(images, labels)`` batches for the weights.
            arch_ds: repeated batches of the held-out split for α.
            steps_per_epoch: steps per epoch.
            val_ds: optional finite dataset: top-1 of the argmax architecture after every epoch.
            writer: optional ``tf.summary`` writer (TensorBoard).
            progress: optional ``callable(total) -> tqdm-like`` progress bar factory.
            on_epoch: optional ``callable(search, record)`` after every saved epoch.
        """
        cfg = self.config
        self.restore()
        total = cfg.epochs * steps_per_epoch
        distribute = self.strategy.experimental_distribute_dataset
        train_it, arch_it = iter(distribute(train_ds)), iter(distribute(arch_ds))
        bar = progress(total) if progress else None
        if bar is not None:
            bar.update(int(self.step.numpy()))
        while int(self.epoch.numpy()) < cfg.epochs:
            epoch = int(self.epoch.numpy())
            t0, sums = time.time(), np.zeros(5)
            for _ in range(steps_per_epoch):
                step = int(self.step.numpy())
                sn.set_temperature(self.model, cfg.tau(step / max(total - 1, 1)))
                x, y = next(train_it)
                ce, acc = self._w_step(x, y)
                c_loss, expected = 0.0, float("nan")
                if epoch >= cfg.warmup_epochs:
                    ax, ay = next(arch_it)
                    a_ce, c_loss, expected = self._a_step(ax, ay)
                sums += [float(ce), float(acc), float(c_loss), float(expected), 1]
                self.step.assign_add(1)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(ce=f"{float(ce):.3f}", mmacs=f"{float(expected) / 1e6:.2f}")
            self.epoch.assign_add(1)
            record = self._record(epoch, sums, time.time() - t0, val_ds)
            self.history.append(record)
            if writer is not None:
                with writer.as_default(step=epoch + 1):
                    for k, v in record.items():
                        if isinstance(v, (int, float)) and v == v:
                            tf.summary.scalar(k, v)
            self.save()
            if on_epoch:
                on_epoch(self, record)
        if bar is not None:
            bar.close()
        return self.history

    def _record(self, epoch, sums, seconds, val_ds) -> dict:
        n = max(sums[4], 1)
        expected, params = sn.expected_cost(self.model, self.space)
        rec = {"epoch": epoch + 1, "step": int(self.step.numpy()), "tau": float(self.model_tau()),
               "train_ce": sums[0] / n, "train_acc": sums[1] / n, "cost_loss": sums[2] / n,
               "expected_macs": float(expected), "expected_params": float(params),
               "argmax_macs": self.supernet.macs(), "seconds": seconds,
               "probs": [np.asarray(b.dw.probabilities()).mean(0).round(5).tolist()
                         for b in sn.search_blocks(self.model) if b.searchable]}
        if val_ds is not None:
            rec["val_acc_argmax"] = self.evaluate(val_ds)
        return rec

    def model_tau(self) -> float:
        block = next(b for b in sn.search_blocks(self.model) if b.searchable)
        return float(block.dw.tau.numpy())
