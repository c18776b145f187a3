"""The FGNAS search loop (paper §4.2, steps 2–3): pre-train the supernet with every gate on, then train weights and
gates together on ``CE + λ·R(ψ)/R₀`` until the hard architecture's resource is at or below the target — the
paper's stopping rule — and freeze ψ. One step near the target can switch many gates at once (a layer's gates move
together: with 9 operations per channel one step went from above the target to 31% below it), so by default
(``refill=True``, not in the paper) the stopping step is followed by :meth:`FgnasSearch.refill`, which turns back on
the off gates closest to on while the exact resource stays at or below the target. Step 4 (fine-tuning the
searched architecture with fixed gates) trains the derived model, which computes the same function with one
operation per branch (``workflows.search_fgnas``).

λ is scale-free here: R is divided by a reference R₀ — ``normalize="target"`` (default): the target T, so λ = 1
makes a network at the target cost one nat of cross-entropy and the push per MAC (λ/T) does not depend on how large
the supernet is, as with the paper's raw λ·R (λ_paper = λ/T); ``normalize="supernet"``: the all-on supernet's
resource. Measured why the default changed: with several operations the all-on supernet in the deployed form is
10–84× the backbone (VGG w12: 75M MACs for kernels {1,3,5}, 643M with three activations too), so R/R_supernet made
the push 20× weaker than for channel pruning alone and {1,3,5} stopped at 2.8× its target after 6 gate epochs.

Weights: SGD with Nesterov momentum and weight decay (the paper's optimizer). Gates: their own optimizer, both
updated from the same backward pass (Eq. 7 minimises over θ and ψ jointly). ``psi_optimizer="sgd"`` (default;
momentum 0.9) moves each gate in proportion to its gradient, so the channels whose cost outweighs their use turn off
first and the resource falls step by step onto the target (tiny VGG, 6 operations, lr 10: 1.0 → 0.30 of R₀ over ~35
steps, landing at 0.299 for a 0.30 target; on real data slower gates do better: the recipe's default is
``workflows.search_fgnas.PSI_LR_PER_OP`` × the number of operations). ``adam`` normalises every gate's step to ~lr
whatever its gradient, so all gates pushed the same way flip together after about ``gate_init / lr`` steps: in the
same tiny setting (lr 0.05) nothing moved for 16 gate steps, then the resource fell to 0.24 R₀ within 6 steps, 21%
under a 0.30 target. The per-gate gradient of λ·R/R₀ shrinks with the number of gates (it sums to about 2λ over all
of them), so larger spaces want a larger ``psi_lr``.
The loop checkpoints every epoch (model, both optimizers, step, phase state) and resumes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from common.epoch_state import EpochState, ResumableLoop
from search import fgnas
from search.fgnas_space import RESOURCES, FgnasSpace

PSI_OPTIMIZERS = ("sgd", "adam")
NORMALIZE = ("target", "supernet")
# FgnasSearch.refill: stop once the resource is within this fraction below the target, try at most this many gates,
# and give each gate turned back on this margin ψ_on − ψ_off (ψ is frozen afterwards, so any positive margin holds)
REFILL_TOLERANCE = 0.01
REFILL_TRIES = 2000
REFILL_MARGIN = 1e-3


@dataclass
class FgnasConfig:
    """Hyper-parameters of one search (recorded in the derived spec's provenance)."""
    target: float
    resource: str = "macs"
    lam: float = 1.0
    pretrain_epochs: int = 2
    search_epochs: int = 10  # at most; the gate phase ends as soon as the hard resource is at or below the target
    w_lr: float = 0.05
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    psi_lr: float = 10.0
    psi_optimizer: str = "sgd"
    input_count: str = "deployed"
    normalize: str = "target"  # R₀ of λ·R/R₀: "target" (T) or "supernet" (the all-on supernet's resource)
    refill: bool = True  # after the stopping step, turn back on what fits under the target (FgnasSearch.refill)
    label_smoothing: float = 0.0
    seed: int = 0


class FgnasSearch(ResumableLoop):
    """Runs pre-training and the gate phase on a supernet of :func:`search.fgnas.build_supernet`.

    Args:
        model: the supernet.
        space: its space.
        config: hyper-parameters.
        checkpoint_dir: where the state lives; an existing checkpoint there is resumed.
        latency: the :class:`search.fgnas_latency.AffineLatency` model when ``config.resource == "latency"``.
    """

    def __init__(self, model: keras.Model, space: FgnasSpace, config: FgnasConfig,
                 checkpoint_dir: str | None = None, latency=None):
        if config.resource not in RESOURCES:
            raise ValueError(f"resource: one of {RESOURCES}, got {config.resource!r}")
        if config.normalize not in NORMALIZE:
            raise ValueError(f"normalize: one of {NORMALIZE}, got {config.normalize!r}")
        if config.psi_optimizer not in PSI_OPTIMIZERS:
            raise ValueError(f"psi_optimizer: one of {PSI_OPTIMIZERS}, got {config.psi_optimizer!r}")
        self.model, self.space, self.config, self.latency = model, space, config, latency
        self.net = fgnas.FgnasSupernet(model, space)
        self.w_vars, self.psi_vars = fgnas.weight_variables(model), fgnas.gate_variables(model)
        self.w_opt = keras.optimizers.SGD(config.w_lr, momentum=config.w_momentum, nesterov=True,
                                          weight_decay=config.w_weight_decay or None)
        self.psi_opt = (keras.optimizers.Adam(config.psi_lr) if config.psi_optimizer == "adam"
                        else keras.optimizers.SGD(config.psi_lr, momentum=0.9))
        self.w_opt.build(self.w_vars)
        self.psi_opt.build(self.psi_vars)
        self.loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="fgnas_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="fgnas_epoch")
        # step at which the hard resource first reached the target (-1: not yet); ψ is frozen from then on
        self.reached_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="fgnas_reached_step")
        self.history: list[dict] = []
        self.refilled: dict | None = None  # what refill() did at the stopping step (None: not run)
        self._state = EpochState(checkpoint_dir, self.epoch, model=model, w_opt=self.w_opt, psi_opt=self.psi_opt,
                                 step=self.step, reached_step=self.reached_step)
        self._classes = int(model.get_layer("classifier").units)
        with tf.init_scope():
            self.r0 = float(self.resource()) if config.normalize == "supernet" else float(config.target)
        # autograph=False: the steps are straight-line TensorFlow (Python loops over layers only); converting them
        # with autograph costs seconds of tracing and buys nothing
        self._w_step = tf.function(self._w_step_fn, autograph=False)
        self._gate_step = tf.function(self._gate_step_fn, autograph=False)
        self._eval_step = tf.function(self._eval_fn, autograph=False)
        self._hard_resource = tf.function(self.resource, autograph=False)  # forward value only: one graph call

    def resource(self):
        """R(ψ) (its forward value: the current hard architecture's exact params or MACs, or its predicted ms)."""
        return self.net.resource(self.config.resource, self.config.input_count, self.latency)

    def _ce(self, y, logits):
        y = tf.one_hot(tf.cast(y, tf.int32), self._classes) if y.shape.rank == 1 else y
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1)), tf.float32))
        return self.loss(y, logits), acc

    def _w_step_fn(self, x, y):
        with tf.GradientTape() as tape:
            ce, acc = self._ce(y, self.model(x, training=True))
        self.w_opt.apply_gradients(zip(tape.gradient(ce, self.w_vars), self.w_vars))
        return ce, acc

    def _gate_step_fn(self, x, y):
        with tf.GradientTape() as tape:
            ce, acc = self._ce(y, self.model(x, training=True))
            r = self.resource()
            loss = ce + self.config.lam * r / self.r0
        grads = tape.gradient(loss, self.w_vars + self.psi_vars)
        n = len(self.w_vars)
        self.w_opt.apply_gradients(zip(grads[:n], self.w_vars))
        self.psi_opt.apply_gradients(zip(grads[n:], self.psi_vars))
        return ce, acc, r

    def _eval_fn(self, x, y):
        logits = self.model(x, training=False)
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                              tf.cast(y, tf.int32)), tf.float32))

    def evaluate(self, ds) -> float:
        """Top-1 of the current hard architecture (the supernet in inference mode = the derived model)."""
        correct, n = 0.0, 0
        for x, y in ds:
            correct += float(self._eval_step(x, y))
            n += int(y.shape[0])
        return correct / max(n, 1)

    @property
    def reached(self) -> bool:
        return int(self.reached_step.numpy()) >= 0

    @property
    def total_epochs(self) -> int:
        return self.config.pretrain_epochs + self.config.search_epochs

    def phase(self, epoch: int) -> str:
        return "pretrain" if epoch < self.config.pretrain_epochs else "search"

    def done(self) -> bool:
        """Finished: the target was reached, or every search epoch has run."""
        return self.reached or int(self.epoch.numpy()) >= self.total_epochs

    def run(self, train_ds, steps_per_epoch: int, val_ds=None, writer=None, progress=None, on_epoch=None):
        """Pre-trains, then searches until the target is reached (or ``search_epochs`` run out), resuming from the
        checkpoint; returns the history (one record per epoch, the last one possibly partial: the epoch in which
        the target was reached)."""
        cfg = self.config
        self.restore()
        it = iter(train_ds)
        bar = progress(self.total_epochs * steps_per_epoch) if progress else None
        if bar is not None:
            bar.update(int(self.step.numpy()))
        while not self.done():
            epoch = int(self.epoch.numpy())
            phase = self.phase(epoch)
            t0, sums, r = time.time(), np.zeros(3), float("nan")
            for _ in range(steps_per_epoch):
                x, y = next(it)
                if phase == "pretrain":
                    ce, acc = self._w_step(x, y)
                else:
                    ce, acc, r_t = self._gate_step(x, y)
                    # the stopping rule on the architecture these gates now define (after the update)
                    r = float(self._hard_resource())
                sums += [float(ce), float(acc), 1]
                self.check_loss(ce, epoch + 1, int(sums[2]), "the cross-entropy")
                self.step.assign_add(1)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(phase=phase, ce=f"{float(ce):.3f}",
                                    cost=f"{r / cfg.target:.3f}T" if r == r else "-")
                if phase == "search" and r <= cfg.target:
                    self.reached_step.assign(self.step)
                    if cfg.refill:
                        self.refilled = self.refill()
                    break
            self.epoch.assign_add(1)
            record = self._record(epoch, phase, sums, time.time() - t0, val_ds)
            self.finish_epoch(record, epoch + 1, writer, on_epoch)
        if bar is not None:
            bar.close()
        return self.history

    def refill(self, tolerance: float = REFILL_TOLERANCE, max_tries: int = REFILL_TRIES) -> dict:
        """After the stopping step: turns back on the off gates closest to on (largest ψ_on − ψ_off first) one by one
        while the exact resource stays at or below the target, until it is within ``tolerance`` of it (or
        ``max_tries`` gates were tried). A single gate step near the target can switch many gates of a layer at
        once (they move together) and land far below it; this refill gives back what fits, so the derived model
        spends its budget. Not in the paper, whose rule only stops at or below the target. Returns what it did."""
        target = float(self.config.target)
        before = r = float(self._hard_resource())
        tried = turned_on = 0
        psis = [v.numpy() for v in self.psi_vars]
        hard = self.net.arch()  # only gates that are off in the architecture (a gating may keep some on)
        candidates = sorted(((float(p[i, c, 0] - p[i, c, 1]), layer, i, c)
                             for layer, p in enumerate(psis) for i, c in zip(*np.nonzero(~hard[layer]))),
                            reverse=True)
        for _, layer, i, c in candidates:
            if r >= (1.0 - tolerance) * target or tried >= max_tries:
                break
            tried += 1
            p = psis[layer]
            old = p[i, c].copy()
            p[i, c, 0] = p[i, c, 1] + REFILL_MARGIN
            self.psi_vars[layer].assign(p)
            r_new = float(self._hard_resource())
            if r_new == r:  # the layer's gating ignores this gate (no_prune / one_op): not a try
                tried -= 1
            # the resource is a float32 sum: keep a relative margin of a few float32 steps below the target
            if r < r_new <= target * (1.0 - 1e-6):
                r, turned_on = r_new, turned_on + 1
            else:  # over the target, or no change: undo
                p[i, c] = old
                self.psi_vars[layer].assign(p)
        return {"before": before, "after": r, "gates_turned_on": turned_on, "gates_tried": tried}

    def _record(self, epoch, phase, sums, seconds, val_ds) -> dict:
        n = max(sums[2], 1)
        arch = self.net.arch()
        summary = self.space.summary(arch)
        channels = sum(r["channels"] for r in summary)
        rec = {"epoch": epoch + 1, "phase": phase, "step": int(self.step.numpy()), "steps": int(sums[2]),
               "train_ce": sums[0] / n, "train_acc": sums[1] / n, "resource": float(self.resource()),
               "macs": self.space.cost(arch, "macs"), "params": self.space.cost(arch, "params"),
               "kept_share": sum(r["kept"] for r in summary) / channels,
               "compositional_share": sum(r["compositional"] for r in summary) / channels,
               "reached": self.reached, "seconds": seconds, "refill": self.refilled,
               "per_layer": [[r["kept"], r["compositional"], r["deployed_width"]] for r in summary]}
        if val_ds is not None:
            rec["val_acc"] = self.evaluate(val_ds)
        return rec
