"""Knowledge distillation as the training task (issue 15): a frozen teacher's softened outputs replace the labels.

Function matching (Beyer et al. 2022, "Knowledge distillation: A good teacher is patient and consistent"): the
teacher sees exactly the student's augmented view — the same random crop and flip, the same mixup / cutmix blend —
and the loss is the KL divergence ``T² · KL(softmax(t / T) ‖ softmax(s / T))`` (as cross-entropy against the
teacher's probabilities; the teacher's entropy is a constant). No labels are needed, so unlabelled images serve.

The teacher runs inside the input pipeline (``tf.data``), after augmentation and mixing, so ``model.fit`` trains the
student on ``(image, teacher probabilities)`` pairs with `DistillationLoss`; validation keeps the real labels
(top-1 against the ground truth; the reported loss is the distillation loss against one-hot labels).

``parse_teacher`` and `MIX_MODES` need no TensorFlow (recipes validate before importing it).
"""
from __future__ import annotations

import math

from common.checks import ConfigError

MIX_MODES = ("none", "mixup", "cutmix", "both")  # "both": each batch mixup or cutmix with probability ½
# Bounds of --temperature: logits / T of a float32 teacher past T = 1/20 of its logit range make one-hot targets
# (1e-30: every target one-hot, the loss T²·CE ≈ 0 — nothing trains); past T = 100 every target is uniform.
TEMPERATURE_RANGE = (0.05, 100.0)
MIX_ALPHA_RANGE = (0.01, 100.0)  # Beta(α, α): smaller α underflows the gamma samples (λ = 0/0)


def parse_teacher(value: str) -> tuple[str, str]:
    """``--teacher=MODEL:WEIGHTS`` → (zoo name or spec path, weights tag or ``.npz`` path); '' → ('', '')."""
    if not value:
        return "", ""
    model, sep, weights = value.rpartition(":")
    if not sep or not model or not weights:
        raise ConfigError(f"--teacher={value}: expected MODEL:WEIGHTS, e.g. efficientnet_lite0:imagenet (a zoo name "
                          "or spec .json, then a zoo weights tag or a .npz path)")
    return model, weights


def mix_batch(x, y, mode: str, alpha: float, seed):
    """Mixup (``x = λ·x + (1 − λ)·x[perm]``, λ ~ Beta(α, α)) or cutmix (a random box of the partner image pasted,
    λ = the kept area) of one batch, with the one-hot/probability targets ``y`` mixed by the same λ. ``"both"``
    picks one of the two per batch. ``seed``: a stateless seed tensor of shape (2,)."""
    import tensorflow as tf

    if mode == "none":
        return x, y
    s1, s2, s3, s4 = [tf.random.experimental.stateless_split(seed, 4)[i] for i in range(4)]
    n = tf.shape(x)[0]
    perm = tf.random.experimental.stateless_shuffle(tf.range(n), s1)
    g1 = tf.random.stateless_gamma([], s2, alpha)
    g2 = tf.random.stateless_gamma([], s3, alpha)
    lam = g1 / (g1 + g2)
    x2, y2 = tf.gather(x, perm), tf.gather(y, perm)

    def mixup():
        return lam * x + (1.0 - lam) * x2, lam * y + (1.0 - lam) * y2

    def cutmix():
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        cut = tf.sqrt(1.0 - lam)
        ch = tf.cast(tf.cast(h, tf.float32) * cut, tf.int32)
        cw = tf.cast(tf.cast(w, tf.float32) * cut, tf.int32)
        cy = tf.random.stateless_uniform([], s4, 0, h, dtype=tf.int32)
        cx = tf.random.stateless_uniform([], tf.reverse(s4, [0]), 0, w, dtype=tf.int32)
        y0, y1 = tf.maximum(cy - ch // 2, 0), tf.minimum(cy + ch // 2, h)
        x0, x1 = tf.maximum(cx - cw // 2, 0), tf.minimum(cx + cw // 2, w)
        rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
        cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
        box = tf.cast(tf.logical_and(rows[:, None], cols[None, :]), x.dtype)[None, :, :, None]
        kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * w, tf.float32)
        return x * (1.0 - box) + x2 * box, kept * y + (1.0 - kept) * y2

    if mode == "mixup":
        return mixup()
    if mode == "cutmix":
        return cutmix()
    coin = tf.random.stateless_uniform([], tf.reverse(s1, [0])) < 0.5
    return tf.cond(coin, mixup, cutmix)


def teacher_targets(teacher, temperature: float):
    """``(x, y) → (x, softmax(teacher(x) / T))``: the map that puts the teacher's view of each augmented batch in
    place of the labels."""
    import tensorflow as tf

    def targets(x, y):
        return x, tf.nn.softmax(teacher(x, training=False) / temperature, axis=-1)
    return targets


def distillation_loss(temperature: float):
    """``T² · CE(teacher probabilities, softmax(student logits / T))``: the distillation KL up to the teacher's
    constant entropy, scaled by T² so its gradients keep their size across temperatures (Hinton et al.)."""
    import keras

    def loss(y_true, logits):  # per example: Keras applies sample weights and the distribution's reduction once
        return temperature * temperature * keras.losses.categorical_crossentropy(y_true, logits / temperature,
                                                                                from_logits=True)
    loss.__name__ = "distillation"
    return loss


def check_teacher(teacher: str, mix: str, temperature: float, mix_alpha: float, dataset: str, classes: int | None,
                  size: int):
    """``(teacher spec, weights path, arrays)`` of ``--teacher`` (None without one), checked before TensorFlow: a
    known model with readable weights whose classifier matches the data's classes and that builds at ``size``;
    ``--mix``, ``--temperature`` and ``--mix_alpha`` checked too."""
    from common.checks import check_one_of
    from models.spec import check_input_size
    from training import weights as W
    check_one_of(mix=(mix, MIX_MODES))
    if not (temperature > 0 and mix_alpha > 0) or math.isinf(temperature) or math.isinf(mix_alpha):  # NaN too
        raise ConfigError(f"--temperature={temperature:g} and --mix_alpha={mix_alpha:g}: both must be positive and "
                          "finite")
    lo, hi = TEMPERATURE_RANGE
    if not lo <= temperature <= hi:
        raise ConfigError(f"--temperature={temperature:g}: must be from {lo:g} to {hi:g} (below, softmax(logits / T) "
                          "rounds to one-hot and the loss to 0, so nothing trains; above, the targets are uniform)")
    lo, hi = MIX_ALPHA_RANGE
    if not lo <= mix_alpha <= hi:
        raise ConfigError(f"--mix_alpha={mix_alpha:g}: must be from {lo:g} to {hi:g} (below, the Beta samples "
                          "underflow to 0/0 = NaN mixing ratios)")
    name, weights = parse_teacher(teacher)
    if not name:
        if temperature != 1.0:
            raise ConfigError(f"--temperature={temperature:g} needs --teacher (it softens a teacher's outputs)")
        return None
    import zoo
    try:
        spec = zoo.get_spec(name)
        path = W.resolve_weights(spec, weights)
    except Exception as e:  # SpecError, ZooError, InputError: one line naming the flag
        raise ConfigError(f"--teacher={teacher}: {e}") from None
    arrays = W.read_weights(path)
    width = W.weights_classes(arrays) or spec.head.classes
    if classes is not None and width != classes:
        raise ConfigError(f"--teacher={teacher}: a {width}-class teacher, but --dataset={dataset} has {classes} "
                          "classes")
    check_input_size(spec, size, "--teacher")
    return spec, path, arrays


def pipeline(ds, checked, teacher: str, mix: str, mix_alpha: float, temperature: float, seed: int, classes: int,
             size: int):
    """Batches of ``(images, one-hot or soft targets)`` after mixup/cutmix (``mix``) and, with a teacher
    (``checked``: `check_teacher`'s result), with the frozen teacher's probabilities on that same augmented view in
    place of the targets. Returns ``(dataset, teacher model or None)``."""
    import tensorflow as tf

    if mix != "none":
        def mixed(i, batch):
            return mix_batch(batch[0], batch[1], mix, mix_alpha, tf.stack([tf.constant(seed, tf.int64), i]))
        ds = ds.enumerate().map(mixed, num_parallel_calls=tf.data.AUTOTUNE)
    if checked is None:
        return ds, None
    import zoo
    from models.weights import assign
    _, path, arrays = checked
    model = zoo.build(teacher.rpartition(":")[0], weights=None, classes=classes, input_size=size)
    assign(model, arrays, source=path)
    model.trainable = False
    return ds.map(teacher_targets(model, temperature)).prefetch(tf.data.AUTOTUNE), model
