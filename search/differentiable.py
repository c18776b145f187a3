"""Differentiable meta-kernel search: weights and α on separate optimizers, Gumbel-softmax with an annealed
temperature, and the cost-aware loss of Eq. 6–7 steering E[cost] to a target.

Per step (first-order): with ``alpha_data="holdout"``, one weight update on a training batch (cross-entropy, SGD with
Nesterov momentum and weight decay, α fixed) and one α update on a batch of the held-out split (cross-entropy +
λ·L_cost, Adam, weights fixed); with ``alpha_data="same"`` (the paper's Algorithm 1) one forward pass on a training
batch gives both updates. τ decays exponentially from ``tau_start`` to ``tau_end`` over the search; α stays frozen
for ``warmup_epochs``. The search checkpoints every epoch (model, both optimizers, step, history) and resumes.

``feedback=True`` is E-DNAS's feedback block (García López et al., Eq. 3–4): every weight step takes two training
batches, one per path, and merges the paths by their losses (``_feedback_step_fn``; exactly one optimizer step on
the β-weighted gradients, since both paths start from the same weights). With β₁ ≈ β₂ ≈ ½ this is one path at twice
the batch; ``history.json`` records how far β strays from ½.

The cost term (:func:`cost_loss`) is, by default, the paper's Eq. 6 as printed: ``−log E[C]`` below ``T(1−η)``,
``+log E[C]`` above ``T(1+η)``, and **0 inside the band** (cross-entropy alone moves α there). ``cost_form="pull"``
is the form this project used before the paper's text was available (``d = |log(E/T)|``, ``L = d + max(0, d −
log(1+η))/η``: it keeps pulling toward T inside the band); it stays for the ablation that compares them
(``benchmarks/metakernel_dynamics.py``).

``a_entropy`` (β, default 0: the paper's objective) adds ``β_t · H̄`` to α's loss, H̄ the mean entropy of the
per-filter choice distributions and β_t ramping linearly from 0 to β over the search. Early on it does nothing;
late it makes each distribution commit, so the argmax — what is derived — converges to an architecture whose cost
is E[C], which Eq. 6 holds in the band. Without it, per-filter α that get few steps (a small data set) stay near
uniform, E[C] sits in the band while the argmax lies far outside it (``benchmarks/metakernel_ab.py``'s searches).

α defaults (Adam, lr 1e-2, β1 = 0.5, no L2 penalty) come from ``benchmarks/metakernel_dynamics.py``: a per-filter α
gets cross-entropy gradients of ~1e-4, so an L2 penalty of 1e-3 (this project's earlier default) holds every α
within ~0.2 of 0 — near-uniform choice probabilities whose argmax is decided by the coherent cost push (every
filter of a layer gets the same one) rather than by the data: the argmax collapsed to "None" while E[MACs] sat on
the target.

The argmax architecture's accuracy (:meth:`MetaKernelSearch.evaluate`) is measured after re-estimating every
BatchNorm's statistics under that architecture (the running averages of the search are those of the soft Gumbel
mixtures, whose kernels are scaled by the choice probabilities: scored with them, a sound argmax network looks like
chance).

Costs are pluggable: ``cost_fn(model) -> tensor`` (default E[MACs] from :func:`search.supernet.expected_cost`).
``latency=`` a per-filter latency table (:class:`search.kernel_latency.KernelLatency`) makes the cost E-DNAS's
expected latency (Eq. 11, FBNet-style Σ P · LAT in ms) with the same band barrier (Eq. 12's budget; the ±log form
makes λ unit-free, so λ plays Eq. 13's β).
"""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from common.epoch_state import EpochState, ResumableLoop
from search import supernet as sn
from search.metakernel_space import SearchSpace

COST_FORMS = ("paper", "pull")
ALPHA_DATA = ("holdout", "same")


def cost_loss(expected, target: float, eta: float = 0.1, form: str = "paper"):
    """L_FLOPs for E[C] = ``expected`` (see the module docstring).

    ``"paper"``: Eq. 6 — ``−log E`` if ``E < T(1−η)``, ``log E`` if ``E > T(1+η)``, else 0.
    ``"pull"``: ``d + max(0, d − log(1+η))/η`` with ``d = |log(E/T)|`` (0 only at E = T).
    """
    if form == "paper":
        log_e = tf.math.log(expected)
        zero = tf.zeros_like(log_e)
        return tf.where(expected < target * (1 - eta), -log_e, tf.where(expected > target * (1 + eta), log_e, zero))
    if form == "pull":
        d = tf.abs(tf.math.log(expected / target))
        return d + tf.nn.relu(d - math.log1p(eta)) / eta
    raise ValueError(f"cost form: one of {COST_FORMS}, got {form!r}")


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
    a_lr: float = 1e-2
    a_weight_decay: float = 0.0
    a_entropy: float = 0.0  # weight of the mean choice entropy in α's loss, ramped 0 → a_entropy over the search
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    temperature: float = 1.0  # distillation temperature: used when the batches carry soft targets (a teacher's)
    cost_form: str = "paper"
    alpha_data: str = "holdout"
    recal_batches: int = 20
    seed: int = 0
    feedback: bool = False  # E-DNAS feedback block: two weight paths on two batches, merged by their losses

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
        cost_fn: ``model -> E[cost]`` tensor (default: expected MACs, or expected latency with ``latency``).
        latency: a :class:`search.kernel_latency.KernelLatency` of ``space``: the cost is E-DNAS's expected latency
            in milliseconds (Eq. 11, Σ P · LAT over the per-filter table; ``config.target`` in ms) and every epoch
            records ``expected_ms`` and the argmax's table latency ``argmax_ms``.
        checkpoint_dir: where the search state lives; an existing checkpoint there is resumed.
        strategy: the ``tf.distribute`` strategy the model was built under (default: the current one). Steps run
            per replica on ``strategy.experimental_distribute_dataset`` batches; gradients are summed across
            replicas of per-replica means divided by the replica count (the global-batch mean).
    """

    def __init__(self, model: keras.Model, space: SearchSpace, config: SearchConfig, cost_fn=None,
                 checkpoint_dir: str | None = None, strategy=None, latency=None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model, self.space, self.config = model, space, config
        self.supernet = sn.MetaKernelSupernet(model, space)
        self.latency = latency
        if latency is not None:
            latency.check(space)
        self.cost_fn = cost_fn or (self.expected_latency if latency is not None else self.expected_macs)
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
        # the entropy term's weight this step (a_entropy × search progress), set by run()
        self._entropy_weight = tf.Variable(0.0, trainable=False, name="entropy_weight")
        if config.cost_form not in COST_FORMS:
            raise ValueError(f"cost_form: one of {COST_FORMS}, got {config.cost_form!r}")
        if config.alpha_data not in ALPHA_DATA:
            raise ValueError(f"alpha_data: one of {ALPHA_DATA}, got {config.alpha_data!r}")
        self._w_step = self._distributed(self._w_step_fn)
        if config.feedback:
            if self.strategy.num_replicas_in_sync > 1:
                raise ValueError("feedback: the two paths are the two batches of one device's step; use one replica")
            if config.alpha_data != "holdout":
                raise ValueError("feedback: merges two weight paths; α trains on the held-out batches "
                                 "(alpha_data='holdout')")
            self._feedback_step = tf.function(self._feedback_step_fn, autograph=False)
        self._a_step = self._distributed(self._a_step_fn)
        self._joint_step = self._distributed(self._joint_step_fn)
        self._eval_step = tf.function(self._eval_fn, autograph=False)
        self._probe = None  # recalibrate's forward pass in training mode (BatchNorm momentum 0)
        self._bn_layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
                           if isinstance(layer, keras.layers.BatchNormalization)]

    def _distributed(self, fn):
        """``fn`` run on every replica; its outputs averaged over replicas."""
        replicas = self.strategy.num_replicas_in_sync

        @functools.partial(tf.function, autograph=False)  # no tensor-valued Python control flow; tracing is faster
        def step(x, y):
            outs = self.strategy.run(fn, (x, y))
            return [self.strategy.reduce("SUM", o, axis=None) / replicas for o in outs]
        return step

    def expected_macs(self, model):
        """The default cost: E[MACs] of the supernet (differentiable in α)."""
        return sn.expected_cost(model, self.space)[0]

    # --- steps -------------------------------------------------------------------------------------------------
    def expected_latency(self, model):
        """E-DNAS's cost: E[LAT] in ms under the choice probabilities (differentiable in α)."""
        return self.latency.expected_ms([b.dw.probabilities() for b in sn.search_blocks(model)])

    def _ce(self, y, logits):
        """Cross-entropy to integer labels, or — targets of rank 2, a teacher's softened probabilities
        (training.distill) — the distillation loss ``T² · CE(p_teacher, softmax(logits / T))``."""
        if y.shape.rank == 2:
            t = self.config.temperature
            return t * t * self.loss(y, logits / t)
        return self.loss(tf.one_hot(y, self._classes), logits)

    @staticmethod
    def _labels(y):
        """Integer labels of the targets (a teacher's argmax for soft targets): training accuracy is then agreement
        with the teacher."""
        return tf.argmax(y, -1, output_type=tf.int32) if y.shape.rank == 2 else tf.cast(y, tf.int32)

    def _w_step_fn(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            ce = self._ce(y, logits)
            decay = tf.add_n([tf.reduce_sum(v ** 2) for v in self.w_vars if len(v.shape) > 1])
            loss = (ce + 0.5 * self.config.w_weight_decay * decay) / self.strategy.num_replicas_in_sync
        grads = tape.gradient(loss, self.w_vars)
        self.w_opt.apply_gradients(zip(grads, self.w_vars))
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), self._labels(y)),
                                     tf.float32))
        return ce, acc

    def _path_grads(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            ce = self._ce(y, logits)
            decay = tf.add_n([tf.reduce_sum(v ** 2) for v in self.w_vars if len(v.shape) > 1])
            loss = ce + 0.5 * self.config.w_weight_decay * decay
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), self._labels(y)),
                                     tf.float32))
        return tape.gradient(loss, self.w_vars), ce, acc

    def _feedback_step_fn(self, x1, y1, x2, y2):
        """E-DNAS Eq. 3–4: two paths start from the same weights and step on their own batches; the merged weights
        are ``β₁K₁ + β₂K₂`` with ``β_j ∝ tanh(1/L_j)``. With both paths stepping by this optimizer from one shared
        state, the merge equals one step on ``β₁g₁ + β₂g₂`` (β₁ + β₂ = 1; for SGD with momentum the merged
        momentum is the same combination), which is what runs here: one optimizer update per step, no weight
        copies. Returns both paths' mean CE and accuracy and β₁."""
        g1, ce1, acc1 = self._path_grads(x1, y1)
        g2, ce2, acc2 = self._path_grads(x2, y2)
        t1, t2 = tf.tanh(1.0 / ce1), tf.tanh(1.0 / ce2)
        b1, b2 = t1 / (t1 + t2), t2 / (t1 + t2)
        grads = [b1 * a + b2 * b for a, b in zip(g1, g2)]
        self.w_opt.apply_gradients(zip(grads, self.w_vars))
        return (ce1 + ce2) / 2, (acc1 + acc2) / 2, b1

    def mean_entropy(self):
        """Mean entropy (nats) of the choice distributions, one per α row (a filter, or a per-layer row)."""
        rows = [b.dw.probabilities() for b in sn.search_blocks(self.model) if b.searchable and b.dw.num_choices > 1]
        h = [-tf.reduce_sum(p * tf.math.log(tf.maximum(p, 1e-12)), axis=-1) for p in rows]
        return tf.reduce_mean(tf.concat(h, 0))

    def _arch_loss(self, ce):
        expected = self.cost_fn(self.model)
        c_loss = cost_loss(expected, self.config.target, self.config.eta, self.config.cost_form)
        decay = tf.add_n([tf.reduce_sum(a ** 2) for a in self.a_vars])
        loss = ce + self.config.lam * c_loss + 0.5 * self.config.a_weight_decay * decay
        if self.config.a_entropy:
            loss += self._entropy_weight * self.mean_entropy()
        return loss / self.strategy.num_replicas_in_sync, c_loss, expected

    def _a_step_fn(self, x, y):
        with tf.GradientTape() as tape:
            ce = self._ce(y, self.model(x, training=True))
            loss, c_loss, expected = self._arch_loss(ce)
        grads = tape.gradient(loss, self.a_vars)
        self.a_opt.apply_gradients(zip(grads, self.a_vars))
        return ce, c_loss, expected

    def _joint_step_fn(self, x, y):
        """Algorithm 1: one forward pass, the weights' and α's updates from the same batch."""
        with tf.GradientTape(persistent=True) as tape:
            logits = self.model(x, training=True)
            ce = self._ce(y, logits)
            decay = tf.add_n([tf.reduce_sum(v ** 2) for v in self.w_vars if len(v.shape) > 1])
            w_loss = (ce + 0.5 * self.config.w_weight_decay * decay) / self.strategy.num_replicas_in_sync
            a_loss, c_loss, expected = self._arch_loss(ce)
        w_grads = tape.gradient(w_loss, self.w_vars)
        a_grads = tape.gradient(a_loss, self.a_vars)
        del tape
        self.w_opt.apply_gradients(zip(w_grads, self.w_vars))
        self.a_opt.apply_gradients(zip(a_grads, self.a_vars))
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), self._labels(y)),
                                     tf.float32))
        return ce, acc, c_loss, expected

    def _eval_fn(self, x, y):
        logits = self.model(x, training=False)  # argmax architecture
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)),
                                     tf.float32))

    # --- the loop ----------------------------------------------------------------------------------------------
    def recalibrate(self, batches, arch=None) -> int:
        """Sets every BatchNorm's moving statistics to the exact average of its batch statistics over ``batches``
        (input images) with an architecture in place: the argmax (τ = 0 selects it in training mode), or ``arch``
        (per-block choice arrays, e.g. a projected one: α is set to its one-hot logits meanwhile and restored). The
        search's steps use batch statistics, so this changes nothing but inference. Returns the number of batches
        used (0: the statistics are left as they were)."""
        tau = self.model_tau()
        momenta = [bn.momentum for bn in self._bn_layers]
        alphas = [np.asarray(b.dw.alpha).copy() for b in self.supernet.blocks if b.searchable]
        sums, n = None, 0
        try:
            if arch is not None:
                for b, c in zip(self.supernet.blocks, arch):
                    if b.searchable:
                        b.dw.alpha.assign(10.0 * np.eye(b.dw.num_choices, dtype=np.float32)[np.asarray(c)])
            sn.set_temperature(self.model, 0.0)
            for bn in self._bn_layers:
                bn.momentum = 0.0  # moving statistics := this batch's (read back and averaged below)
            if self._probe is None:  # traced once (every call runs with momentum 0; τ and α are variables)
                self._probe = tf.function(lambda x: self.model(x, training=True), autograph=False)
            probe = self._probe
            for x in batches:
                for bn in self._bn_layers:  # 0 · NaN would keep a NaN
                    bn.moving_mean.assign(tf.zeros_like(bn.moving_mean))
                    bn.moving_variance.assign(tf.ones_like(bn.moving_variance))
                probe(x)
                stats = [(bn.moving_mean.numpy().astype(np.float64), bn.moving_variance.numpy().astype(np.float64))
                         for bn in self._bn_layers]
                sums = stats if sums is None else [(a + m, b + v) for (a, b), (m, v) in zip(sums, stats)]
                n += 1
        finally:
            sn.set_temperature(self.model, tau)
            for b, a in zip([b for b in self.supernet.blocks if b.searchable], alphas):
                b.dw.alpha.assign(a)
            for bn, momentum in zip(self._bn_layers, momenta):
                bn.momentum = momentum
            for bn, (m, v) in zip(self._bn_layers, [(m / n, v / n) for m, v in sums] if n else ()):
                bn.moving_mean.assign(np.asarray(m, np.float32))
                bn.moving_variance.assign(np.asarray(v, np.float32))
        return n

    def evaluate(self, ds, recal_ds=None) -> float:
        """Top-1 of the argmax architecture (supernet weights, inference BN) on ``ds``; with ``recal_ds`` (an
        iterable of ``(images, labels)``), BN statistics are first re-estimated under the argmax
        (:meth:`recalibrate`)."""
        if recal_ds is not None:
            self.recalibrate(x for x, _ in recal_ds)
        correct, n = 0.0, 0
        for x, y in ds:
            correct += float(self._eval_step(x, y))  # single device: evaluation batches are small
            n += int(y.shape[0])
        return correct / max(n, 1)

    def run(self, train_ds, arch_ds, steps_per_epoch: int, val_ds=None, writer=None, progress=None, on_epoch=None,
            recal_ds=None):
        """Searches for ``config.epochs`` epochs (resuming from ``checkpoint_dir``); returns the history.

        Args:
            train_ds: repeated ``(images, labels)`` batches for the weights.
            arch_ds: repeated batches of the held-out split for α.
            steps_per_epoch: steps per epoch.
            val_ds: optional finite dataset: top-1 of the argmax architecture after every epoch.
            writer: optional ``tf.summary`` writer (TensorBoard).
            progress: optional ``callable(total) -> tqdm-like`` progress bar factory.
            on_epoch: optional ``callable(search, record)`` after every saved epoch.
            recal_ds: batches whose images re-estimate BatchNorm before each argmax evaluation (default
                ``train_ds``; pass the un-mixed images when ``train_ds`` blends them).
        """
        cfg = self.config
        self.restore()
        total = cfg.epochs * steps_per_epoch
        distribute = self.strategy.experimental_distribute_dataset
        train_it = iter(distribute(train_ds))
        arch_it = iter(distribute(arch_ds)) if cfg.alpha_data == "holdout" else None
        recal = (recal_ds if recal_ds is not None else train_ds).take(cfg.recal_batches) if cfg.recal_batches else None
        bar = progress(total) if progress else None
        if bar is not None:
            bar.update(int(self.step.numpy()))
        self._in_band_step = next((h["first_in_band_step"] for h in reversed(self.history)
                                   if h.get("first_in_band_step") is not None), None)
        while int(self.epoch.numpy()) < cfg.epochs:
            epoch = int(self.epoch.numpy())
            t0, sums = time.time(), np.zeros(5)
            self._betas = []
            for _ in range(steps_per_epoch):
                step = int(self.step.numpy())
                sn.set_temperature(self.model, cfg.tau(step / max(total - 1, 1)))
                self._entropy_weight.assign(cfg.a_entropy * step / max(total - 1, 1))
                x, y = next(train_it)
                c_loss, expected = 0.0, float("nan")
                if cfg.feedback:  # the second path's batch
                    x2, y2 = next(train_it)
                    ce, acc, beta = self._feedback_step(x, y, x2, y2)
                    self._betas.append(float(beta))
                    if epoch >= cfg.warmup_epochs:
                        ax, ay = next(arch_it)
                        _, c_loss, expected = self._a_step(ax, ay)
                elif epoch < cfg.warmup_epochs:
                    ce, acc = self._w_step(x, y)
                elif cfg.alpha_data == "same":
                    ce, acc, c_loss, expected = self._joint_step(x, y)
                else:
                    ce, acc = self._w_step(x, y)
                    ax, ay = next(arch_it)
                    _, c_loss, expected = self._a_step(ax, ay)
                sums += [float(ce), float(acc), float(c_loss), float(expected), 1]
                self.check_loss(ce, epoch + 1, step - epoch * steps_per_epoch + 1, "the cross-entropy")
                self.check_loss(c_loss, epoch + 1, step - epoch * steps_per_epoch + 1, "the cost loss")
                if self._in_band_step is None and abs(float(expected) / cfg.target - 1) <= cfg.eta:
                    self._in_band_step = step + 1
                self.step.assign_add(1)
                if bar is not None:
                    bar.update(1)
                    cost = {"ms": f"{float(expected):.3f}"} if self.latency is not None else {
                        "mmacs": f"{float(expected) / 1e6:.2f}"}
                    bar.set_postfix(ce=f"{float(ce):.3f}", **cost)
            self.epoch.assign_add(1)
            record = self._record(epoch, sums, time.time() - t0, val_ds, recal)
            self.finish_epoch(record, epoch + 1, writer, on_epoch)
        if bar is not None:
            bar.close()
        return self.history

    def _record(self, epoch, sums, seconds, val_ds, recal_ds=None) -> dict:
        n = max(sums[4], 1)
        expected, params = sn.expected_cost(self.model, self.space)
        rows = [np.asarray(b.dw.probabilities()) for b in sn.search_blocks(self.model)
                if b.searchable and b.dw.per_filter]
        max_prob = float(np.mean(np.concatenate([r.max(-1) for r in rows]))) if rows else float("nan")
        rec = {"epoch": epoch + 1, "step": int(self.step.numpy()), "tau": float(self.model_tau()),
               "train_ce": sums[0] / n, "train_acc": sums[1] / n, "cost_loss": sums[2] / n,
               "expected_macs": float(expected), "expected_params": float(params),
               "argmax_macs": self.supernet.macs(), "mean_max_prob": max_prob, "seconds": seconds,
               "probs": [np.asarray(b.dw.probabilities()).mean(0).round(5).tolist()
                         for b in sn.search_blocks(self.model) if b.searchable]}
        if rows:
            rec["mean_entropy"] = float(self.mean_entropy())
        rec["first_in_band_step"] = self._in_band_step  # the first α step with E[cost] inside T(1 ± η)
        rec["argmax_changed_share"] = self._argmax_change(epoch + 1)
        if self.latency is not None:
            rec["expected_ms"] = float(self.expected_latency(self.model))
            rec["argmax_ms"] = self.latency.predict(self.space, self.supernet.choices())
        if self.config.feedback and self._betas:  # how far the loss weighting is from a plain average
            b = np.asarray(self._betas)
            rec["feedback_beta1_mean"] = float(b.mean())
            rec["feedback_beta1_abs_dev_mean"] = float(np.abs(b - 0.5).mean())
            rec["feedback_beta1_abs_dev_max"] = float(np.abs(b - 0.5).max())
        if val_ds is not None:
            rec["val_acc_argmax"] = self.evaluate(val_ds, recal_ds)
        return rec

    def _argmax_change(self, epoch: int) -> float | None:
        """Share of per-filter choices whose argmax differs from the previous epoch's (None after the first). The
        argmax of every epoch is kept in ``checkpoint_dir/argmax.npz`` so that a resumed search continues the
        series."""
        cur = [c for c, b in zip(self.supernet.choices(), self.supernet.blocks) if b.dw.per_filter]
        if not cur:
            return None
        cur = np.concatenate(cur)
        path = os.path.join(self.checkpoint_dir, "argmax.npz") if self.checkpoint_dir else None
        if not hasattr(self, "_argmax_store"):
            self._argmax_store = {}
            if path and os.path.exists(path):
                with np.load(path) as f:
                    self._argmax_store = {k: f[k] for k in f.files}
        store = self._argmax_store
        for k in [k for k in store if int(k[1:]) >= epoch]:  # epochs a resume repeats
            del store[k]
        prev = store.get(f"e{epoch - 1}")
        store[f"e{epoch}"] = cur
        if path:
            from common.io import atomic_write
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            atomic_write(path, lambda f: np.savez(f, **store))
        return None if prev is None or prev.shape != cur.shape else float(np.mean(prev != cur))

    def model_tau(self) -> float:
        block = next(b for b in sn.search_blocks(self.model) if b.searchable)
        return float(block.dw.tau.numpy())
