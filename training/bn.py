"""Precise BatchNorm: moving statistics re-estimated exactly over a set of batches (Wu & Johnson 2021)."""
from __future__ import annotations

import numpy as np


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
