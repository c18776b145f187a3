"""Training the detector: the learning-rate schedule and one optimizer step under a ``tf.distribute`` strategy with
the backbone frozen or not.

Schedule (YOLOv3's stepped one): the learning rate rises linearly to its peak over the warm-up steps and is
multiplied by 0.1 at each given fraction of the training steps. Optimisation: Adam (or SGD with momentum 0.9) with
decoupled weight decay on conv kernels. The head and the backbone have one optimizer each, both built before the
first step: the backbone's slots and Adam bias correction start when it is unfrozen, instead of seeing the head's
step count (Adam would otherwise take several times too large steps on the pretrained features for hundreds of
steps). One learning rate drives both.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from detection.loss import yolo_loss
from models.yolo import set_backbone_trainable


def lr_at(step: int, total: int, peak: float, warmup_steps: int, fractions: tuple[float, ...]) -> float:
    """Learning rate of a step.

    Args:
        step: 0-based step.
        total: training steps of the run.
        peak: the rate after the warm-up.
        warmup_steps: linear warm-up from ``peak / warmup_steps`` to ``peak`` over this many steps (0: none).
        fractions: ×0.1 for every fraction f with ``step >= f·total``.

    Returns:
        The learning rate.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * 0.1 ** sum(step >= f * total for f in fractions)


class Trainer:
    """One optimizer step of the detector under a strategy, with the backbone frozen or not.

    Two optimizers (head: variables named ``yolo_*``; backbone: the rest), both built over their variables at
    construction (outside any tf.function). ``set_frozen`` retraces the step: a frozen backbone gets no gradient and
    its BatchNorm runs in inference mode (Keras' ``trainable=False``). ``set_lr`` sets both learning rates.

    Args:
        model: the detector (``models.yolo.build_detector``), built under ``strategy``'s scope.
        anchors: (9, 2) input pixels.
        input_size: S.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: decoupled weight decay on conv kernels (0: none).
        box_loss: ``"xywh"`` or ``"giou"`` (`detection.loss.yolo_loss`).
        strategy: the ``tf.distribute`` strategy (default: the current one).
    """

    def __init__(self, model, anchors, input_size: int, *, optimizer: str = "adam", weight_decay: float = 0.0,
                 box_loss: str = "xywh", strategy=None):
        self.model, self.input_size, self.box_loss = model, input_size, box_loss
        self.anchors = tf.constant(anchors, tf.float32)
        self.strategy = strategy or tf.distribute.get_strategy()
        set_backbone_trainable(model, True)
        self.head_vars = [v for v in model.trainable_variables if v.path.startswith("yolo_")]
        self.backbone_vars = [v for v in model.trainable_variables if not v.path.startswith("yolo_")]

        def make(variables):
            wd = weight_decay or None
            opt = (keras.optimizers.Adam(1e-3, weight_decay=wd) if optimizer == "adam"
                   else keras.optimizers.SGD(1e-3, momentum=0.9, weight_decay=wd))
            if wd:
                opt.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) < 4])
            opt.build(variables)  # outside tf.function: tracing the slot creation costs ~15 s
            return opt

        with self.strategy.scope():
            self.head_opt, self.backbone_opt = make(self.head_vars), make(self.backbone_vars)
        self.frozen = None
        self._step = None

    def set_lr(self, lr: float) -> None:
        """Sets the learning rate of both optimizers."""
        self.head_opt.learning_rate = lr
        self.backbone_opt.learning_rate = lr

    def set_frozen(self, frozen: bool) -> None:
        """Freezes (no gradient, BatchNorm in inference mode) or unfreezes the backbone; retraces the step."""
        if frozen == self.frozen:
            return
        self.frozen = frozen
        set_backbone_trainable(self.model, not frozen)
        strategy = self.strategy
        replicas = strategy.num_replicas_in_sync

        def replica_step(images, boxes, t8, t16, t32):
            variables = self.head_vars + ([] if frozen else self.backbone_vars)
            with tf.GradientTape() as tape:
                pred = self.model(images, training=True)
                loss, parts = yolo_loss([t8, t16, t32], pred, boxes, self.anchors, self.input_size,
                                        box_loss=self.box_loss)
                scaled = loss / replicas  # replica gradients are summed
            grads = tape.gradient(scaled, variables)
            n = len(self.head_vars)
            self.head_opt.apply(grads[:n], self.head_vars)
            if not frozen:
                self.backbone_opt.apply(grads[n:], self.backbone_vars)
            return {"loss": loss, **parts}

        @tf.function
        def step(batch):
            out = strategy.run(replica_step, args=batch)
            return {k: strategy.reduce("SUM", v, axis=None) / replicas for k, v in out.items()}
        self._step = step

    def step(self, batch) -> dict:
        """One step on a (distributed) batch ``(images, boxes, t8, t16, t32)``; returns float loss parts."""
        return {k: float(v) for k, v in self._step(batch).items()}
