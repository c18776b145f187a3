"""Meta-kernel search layers (Chen et al. 2019, "Efficient Differentiable NAS with Meta Kernels").

A :class:`MetaKernelDepthwise` layer holds one ``k_max×k_max`` *meta kernel* per depthwise filter and, per filter, the
architecture logits α over the choices ``[None, k_1, …, k_N]``. A candidate kernel ``k_i`` is the centred ``k_i×k_i``
mask ``M(i)`` of the meta kernel; ``M(0)`` ("None") is all zeros. With choice probabilities ``p`` (Gumbel-softmax
samples during search, Eq. 9; softmax for the expected cost, Eq. 8) the effective kernel is
``K̂ ⊙ Σ_i p_i M(i)`` (Eq. 3), so the layer runs **one** depthwise convolution whatever N is.

:class:`MultiPathDepthwise` is the DARTS-style baseline over the same choices: N separate depthwise kernels, N
convolutions, and the probability-weighted sum of their outputs.

Supported candidates: square, odd sizes (any number of them). Asymmetric (3×1/1×3) and dilated kernels would be other
masks of the same meta kernel, but the zoo spec and the derived models only express square kernels, so they are not
offered.

"None" and batch normalisation: a zero kernel alone prunes nothing when a BatchNormalization follows the depthwise
conv (BN undoes any per-channel scale in training mode, and its β makes a constant channel at inference). So the
search block (:mod:`search.supernet`) multiplies each filter's activated output by its keep probability
``1 - p_None`` from the *same* sample (:meth:`keep`). With a hard one-hot "None" the channel is exactly zero, which is
what makes removing it from the derived model exact.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from search import PACKAGE
from search.metakernel_space import check_candidates, kernel_masks


class _KernelChoice(keras.layers.Layer):
    """Shared part of the searchable depthwise layers: candidates, α, temperature and sampling.

    Args:
        candidates: odd kernel sizes (sorted internally).
        strides: depthwise stride (1 or 2).
        padding: ``"same"`` (odd kernels with TensorFlow "same" padding make a centred crop exact, also at stride 2).
        allow_none: add the "None" choice (prunes the filter).
        per_filter: one α row per filter (the paper); ``False``: one row shared by the layer.
        tau: initial Gumbel-softmax temperature (a non-trainable weight; the search anneals it).
        alpha_init_std: std of the normal α initialisation (0: uniform choice probabilities).
        seed: seed of the Gumbel noise.
    """

    def __init__(self, candidates=(3, 5, 7), strides=1, padding="same", allow_none=True, per_filter=True, tau=1.0,
                 alpha_init_std=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.candidates = check_candidates(candidates)
        self.strides = int(strides)
        if padding != "same":
            raise ValueError(f"padding: only 'same' is supported, got {padding!r}")
        self.padding = padding
        self.allow_none = bool(allow_none)
        self.per_filter = bool(per_filter)
        self.initial_tau = float(tau)
        self.alpha_init_std = float(alpha_init_std)
        self.seed = seed
        self.k_max = self.candidates[-1]
        self.offset = 1 if self.allow_none else 0  # index of the first kernel choice in a probability row
        self.num_choices = len(self.candidates) + self.offset
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _build_choice(self, channels: int):
        self.channels = channels
        rows = channels if self.per_filter else 1
        init = (keras.initializers.RandomNormal(stddev=self.alpha_init_std, seed=self.seed)
                if self.alpha_init_std > 0 else "zeros")
        self.alpha = self.add_weight(name="alpha", shape=(rows, self.num_choices), initializer=init, trainable=True)
        self.tau = self.add_weight(name="tau", shape=(), initializer=keras.initializers.Constant(self.initial_tau),
                                   trainable=False)

    def probabilities(self):
        """Softmax of α (Eq. 8), shape ``(rows, choices)``: what the expected cost uses (ones for a single choice:
        no softmax over an axis of size 1, which Keras warns about)."""
        if self.num_choices == 1:
            return ops.ones_like(self.alpha)
        return ops.softmax(self.alpha, axis=-1)

    def sample(self, training=None):
        """Choice weights for one step: a Gumbel-softmax sample at temperature τ (Eq. 9) when training, else the
        one-hot argmax (the derived architecture). τ = 0 selects the argmax in training mode too (BatchNorm then
        sees the derived architecture: how the search re-estimates BN statistics before scoring the argmax)."""
        argmax = ops.one_hot(ops.argmax(self.tie_broken(self.alpha), axis=-1), self.num_choices)
        if not training or self.num_choices == 1:  # one choice: its weight is 1 (no softmax over one candidate)
            return argmax
        u = keras.random.uniform(ops.shape(self.alpha), minval=1e-10, maxval=1.0, seed=self.seed_generator)
        gumbel = -ops.log(-ops.log(u))
        soft = ops.softmax((self.alpha + gumbel) / ops.maximum(self.tau, 1e-6), axis=-1)
        return ops.where(self.tau > 0, soft, argmax)

    def tie_broken(self, alpha):
        """α with "None" lowered by 1e-6: a tie (e.g. the uniform initial α) never prunes (argmax takes the first)."""
        if not self.allow_none:
            return alpha
        return alpha - ops.convert_to_tensor(np.eye(1, self.num_choices, dtype=np.float32) * 1e-6)

    def keep(self, p):
        """Per-channel keep weight ``1 - p_None`` (shape ``(channels,)`` or ``(1,)``), or None without "None"."""
        if not self.allow_none:
            return None
        return 1.0 - p[:, 0]

    def expected_area(self, p):
        """Σ_i p_i·k_i² per row: the expected depthwise kernel area (pruned filters count 0)."""
        areas = ops.convert_to_tensor(np.array([k * k for k in self.candidates], np.float32))
        return ops.sum(p[:, self.offset:] * areas, axis=-1)

    def _dw(self, x, kernel):
        return ops.depthwise_conv(x, kernel, strides=self.strides, padding=self.padding)

    def call(self, inputs, training=None):
        return self.conv(inputs, self.sample(training))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        out = lambda n: None if n is None else -(-n // self.strides)  # noqa: E731
        return (b, out(h), out(w), c)

    def get_config(self):
        config = super().get_config()
        config.update(candidates=list(self.candidates), strides=self.strides, padding=self.padding,
                      allow_none=self.allow_none, per_filter=self.per_filter, tau=self.initial_tau,
                      alpha_init_std=self.alpha_init_std, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MetaKernelDepthwise(_KernelChoice):
    """Depthwise conv whose kernel is the probability-weighted mask of one meta kernel (Eq. 3): one conv per step.

    ``kernel`` has shape ``(k_max, k_max, channels, 1)`` like ``DepthwiseConv2D``'s; a derived model's ``k×k`` filter is
    its centred crop (:meth:`crop`).
    """

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self._build_choice(channels)
        self.kernel = self.add_weight(name="kernel", shape=(self.k_max, self.k_max, channels, 1),
                                      initializer="he_normal", trainable=True)
        self.masks = kernel_masks(self.candidates, self.allow_none)

    def effective_kernel(self, p):
        """``K̂ ⊙ Σ_i p_i M(i)`` for choice weights ``p`` of shape ``(rows, choices)``."""
        mask = ops.einsum("rm,mhw->hwr", p, ops.convert_to_tensor(self.masks))  # (k, k, rows); rows broadcast to C
        return self.kernel * ops.expand_dims(mask, -1)

    def conv(self, x, p):
        return self._dw(x, self.effective_kernel(p))

    def crop(self, k: int) -> np.ndarray:
        """The centred ``k×k`` crop of the meta kernel, shape ``(k, k, channels, 1)``."""
        o = (self.k_max - k) // 2
        return np.asarray(self.kernel)[o:o + k, o:o + k]


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiPathDepthwise(_KernelChoice):
    """DARTS-style baseline: one depthwise kernel per candidate, N convolutions, output ``Σ_i p_i · dw_{k_i}(x)``.

    Memory and time grow with N (every candidate's feature map is kept for the backward pass).
    """

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self._build_choice(channels)
        self.kernels = [self.add_weight(name=f"kernel_{k}", shape=(k, k, channels, 1), initializer="he_normal",
                                        trainable=True) for k in self.candidates]

    def conv(self, x, p):
        y = 0.0
        for i, kernel in enumerate(self.kernels):
            y = y + self._dw(x, kernel) * p[:, self.offset + i]
        return y

    def crop(self, k: int) -> np.ndarray:
        return np.asarray(self.kernels[self.candidates.index(k)])
