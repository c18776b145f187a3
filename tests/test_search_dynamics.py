"""The search's dynamics pieces: the paper's Eq. 6 cost loss, argmax sampling in training mode, BN re-estimation of
the argmax supernet, Algorithm 1's joint step, the mixture report, and the kernel-ablation baselines."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.counting import count
from search import supernet as sn
from search.differentiable import MetaKernelSearch, SearchConfig, cost_loss
from search.metakernel_space import ablation_space, cifar_space, split_channels

SPACE = cifar_space(width=0.25, candidates=(3, 5, 7))


@pytest.mark.parametrize("ratio, expected", [(0.5, -math.log(50.0)), (0.95, 0.0), (1.0, 0.0), (1.05, 0.0),
                                             (2.0, math.log(200.0))])
def test_paper_cost_loss_is_a_dead_zone_with_log_walls(ratio, expected):
    e = tf.constant(100.0 * ratio)
    assert float(cost_loss(e, 100.0, 0.1, "paper")) == pytest.approx(expected, rel=1e-5)


def test_paper_cost_loss_gradient_pushes_back_outside_and_vanishes_inside():
    for ratio, sign in ((0.5, -1), (1.0, 0), (1.5, 1)):
        e = tf.Variable(100.0 * ratio)
        with tf.GradientTape() as tape:
            loss = cost_loss(e, 100.0, 0.1, "paper")
        g = float(tape.gradient(loss, e))
        assert np.sign(g) == sign, (ratio, g)
    e = tf.Variable(105.0)  # the earlier form keeps pulling inside the band
    with tf.GradientTape() as tape:
        loss = cost_loss(e, 100.0, 0.1, "pull")
    assert float(tape.gradient(loss, e)) > 0
    with pytest.raises(ValueError, match="cost form"):
        cost_loss(e, 100.0, 0.1, "nope")


def test_zero_temperature_samples_the_argmax_in_training_mode():
    model = sn.build_supernet(SPACE, seed=0, alpha_init_std=1.0)
    block = next(b for b in sn.search_blocks(model) if b.dw.per_filter)
    block.dw.tau.assign(0.0)
    hard = np.asarray(block.dw.sample(True))
    np.testing.assert_array_equal(hard, np.asarray(block.dw.sample(False)))
    block.dw.tau.assign(1.0)
    soft = np.asarray(block.dw.sample(True))
    assert soft.max(-1).mean() < 0.99


def _search(model, **kw):
    return MetaKernelSearch(model, SPACE, SearchConfig(target=count(SPACE.skeleton(3)).macs, **kw))


def test_recalibration_gives_inference_the_argmax_batch_statistics():
    """After re-estimating BN on one batch, the supernet in inference mode computes what it computes in training
    mode with the argmax architecture on that batch (BN from that batch's statistics)."""
    keras.utils.set_random_seed(0)
    space = SPACE.replace(dropout=0.0)  # training mode must differ from inference only in BN
    model = sn.build_supernet(space, seed=0, alpha_init_std=2.0, tau=1.0)
    search = _search(model)
    x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    assert search.recalibrate([x]) == 1
    assert search.model_tau() == pytest.approx(1.0)  # temperature restored
    sn.set_temperature(model, 0.0)
    y_train = np.asarray(model(x, training=True))
    sn.set_temperature(model, 1.0)
    y_infer = np.asarray(model(x, training=False))
    # BN's epsilon is added to a biased variance in both paths; the moving update is exact at momentum 0
    assert np.abs(y_train - y_infer).max() < 2e-3
    assert all(bn.momentum > 0 for bn in search._bn_layers)  # momenta restored


def test_joint_step_updates_weights_and_alpha_from_one_batch():
    keras.utils.set_random_seed(0)
    model = sn.build_supernet(SPACE, seed=0)
    search = _search(model, alpha_data="same", a_lr=0.05)
    alpha0 = [np.asarray(a).copy() for a in search.a_vars]
    w0 = np.asarray(search.w_vars[0]).copy()
    x = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 10
    ce, acc, c_loss, expected = search._joint_step(x, y)
    assert np.isfinite(float(ce)) and float(expected) > 0
    assert any(np.abs(np.asarray(a) - b).max() > 0 for a, b in zip(search.a_vars, alpha0))
    assert np.abs(np.asarray(search.w_vars[0]) - w0).max() > 0
    with pytest.raises(ValueError, match="alpha_data"):
        _search(model, alpha_data="elsewhere")


def test_entropy_term_commits_each_filter_and_is_off_by_default():
    """``a_entropy`` adds β_t·H̄ to α's loss (β_t ramps 0 → β over the search): its gradient sharpens every choice
    distribution toward its current argmax; at β = 0 (the paper's objective) the loss is unchanged."""
    keras.utils.set_random_seed(0)
    model = sn.build_supernet(SPACE, seed=0, alpha_init_std=0.5)
    search = _search(model, a_entropy=1.0, lam=0.0)
    h0 = float(search.mean_entropy())
    assert 0 < h0 < math.log(4)
    ce = tf.constant(1.0)
    search._entropy_weight.assign(0.0)
    assert float(search._arch_loss(ce)[0]) == pytest.approx(1.0)
    search._entropy_weight.assign(1.0)
    with tf.GradientTape() as tape:
        loss = search._arch_loss(ce)[0]
    assert float(loss) == pytest.approx(1.0 + h0, rel=1e-5)
    grads = tape.gradient(loss, search.a_vars)
    for a, g in zip(search.a_vars, grads):
        a.assign_sub(0.5 * g * a.shape[0] * len(search.a_vars))  # one plain descent step on H̄
    assert float(search.mean_entropy()) < h0
    plain = _search(sn.build_supernet(SPACE, seed=0), lam=0.0)
    assert plain.config.a_entropy == 0.0 and float(plain._arch_loss(ce)[0]) == pytest.approx(1.0)


def test_mixture_counts_layers_with_two_kernel_sizes_of_ten_percent():
    model = sn.build_supernet(SPACE, seed=0)
    net = sn.MetaKernelSupernet(model, SPACE)
    blocks = [b for b in net.blocks if b.dw.per_filter]
    arch = []
    for b in net.blocks:
        c = np.full(b.dw.alpha.shape[0], 1 if b.dw.per_filter else 0)
        if b is blocks[0]:
            c[: len(c) // 2] = 3  # half 7×7, half 3×3
        if b is blocks[1]:
            c[:1] = 2  # one 5×5 filter: under 10% of the layer
        arch.append(c)
    mix = net.mixture(arch)
    assert mix["mixed_layers"] == 1 and mix["layers"] == len(blocks)
    assert mix["layerwise_layers"] == [b.name for b in net.blocks if not b.dw.per_filter]
    assert net.changed_rows(arch, arch) == (0, 0)
    assert not net.blocks[0].dw.per_filter and net.blocks[1] is blocks[0]
    moved = [c.copy() for c in arch]
    moved[0][0] = 1  # the layer-wise block: one row, the whole layer
    moved[1][:3] = 0  # three 7×7 filters pruned
    assert net.changed_rows(moved, arch) == (3, 1)
    assert mix["labels"] == ["pruned", "3×3", "5×5", "7×7"]
    assert mix["per_layer"][blocks[0].name][1] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("total, n, kind, expected", [
    (48, 3, "uniform", (16, 16, 16)), (50, 3, "uniform", (17, 17, 16)), (48, 3, "exponential", (24, 12, 12)),
    (64, 4, "exponential", (32, 16, 8, 8)), (6, 6, "exponential", (1, 1, 1, 1, 1, 1)),
    (54, 6, "exponential", (30, 13, 6, 3, 1, 1)), (67, 2, "exponential", (34, 33))])
def test_split_channels_uniform_and_exponential(total, n, kind, expected):
    sizes = split_channels(total, n, kind)
    assert sizes == expected and sum(sizes) == total
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))  # never more filters for a larger kernel


def test_ablation_baselines_match_the_target_macs():
    space = ablation_space(expand=3)
    target = count(space.mixed((7,))).macs
    for kernels, part in (((3,), "uniform"), ((9,), "uniform"), ((3, 5, 7), "exponential"),
                          ((3, 5, 7, 9, 11, 13), "uniform")):
        spec, scale = space.matched(kernels, part, target)
        assert abs(count(spec).macs / target - 1) <= 0.02
        block = spec.stages[0][0]
        assert block.kernels == kernels and len(block.split) == len(kernels)
    with pytest.raises(ValueError, match="no expansion scale"):
        space.matched((3,), "uniform", target, tol=1e-9)


def test_soft_targets_are_distilled():
    """Targets of rank 2 (a teacher's probabilities, training.distill) give T² · CE(p, softmax(logits / T)); integer
    labels stay plain cross-entropy; accuracy compares with the teacher's argmax."""
    search = _search(sn.build_supernet(SPACE, seed=0), temperature=3.0)
    logits = tf.constant([[2.0, -1.0, 0.5] + [0.0] * 7, [0.1, 0.2, 3.0] + [0.0] * 7])
    soft = tf.nn.softmax(tf.constant([[1.0, 0.0, 0.0] + [0.0] * 7, [0.0, 0.0, 2.0] + [0.0] * 7]))
    expected = 9.0 * keras.losses.CategoricalCrossentropy(from_logits=True)(soft, logits / 3.0)
    np.testing.assert_allclose(float(search._ce(soft, logits)), float(expected), rtol=1e-6)
    hard = keras.losses.CategoricalCrossentropy(from_logits=True)(tf.one_hot([0, 2], 10), logits)
    np.testing.assert_allclose(float(search._ce(tf.constant([0, 2]), logits)), float(hard), rtol=1e-6)
    assert search._labels(soft).numpy().tolist() == [0, 2]


@pytest.mark.slow  # ~10 s: the fast tier stays within 3 minutes
def test_feedback_step_is_the_loss_weighted_merge_of_two_paths():
    """E-DNAS Eq. 3–4: two paths step from the same weights on their own batches and merge as β₁K₁ + β₂K₂ with
    β_j ∝ tanh(1/L_j). With plain SGD the search's single update on β-weighted gradients is that merge exactly."""
    keras.utils.set_random_seed(0)
    space = SPACE.replace(dropout=0.0)
    model = sn.build_supernet(space, seed=0)
    search = _search(model, feedback=True, w_momentum=0.0, w_weight_decay=0.0, w_lr=0.1)
    sn.set_temperature(model, 0.0)  # no Gumbel noise: the same forward pass every time
    rng = np.random.default_rng(2)
    x1, x2 = (tf.constant(rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")) for _ in range(2))
    y1, y2 = tf.constant(np.arange(8) % 10), tf.constant((np.arange(8) + 3) % 10)
    w0 = [np.asarray(v).copy() for v in search.w_vars]
    bn0 = [np.asarray(v).copy() for v in model.non_trainable_variables]
    paths, losses = [], []
    for x, y in ((x1, y1), (x2, y2)):  # each path from the same start (weights and BN statistics)
        for v, a in zip(search.w_vars, w0):
            v.assign(a)
        for v, a in zip(model.non_trainable_variables, bn0):
            v.assign(a)
        grads, ce, _ = search._path_grads(x, y)
        paths.append([a - 0.1 * np.asarray(g) for a, g in zip(w0, grads)])
        losses.append(float(ce))
    t = np.tanh(1.0 / np.array(losses))
    beta = t / t.sum()
    for v, a in zip(search.w_vars, w0):
        v.assign(a)
    for v, a in zip(model.non_trainable_variables, bn0):
        v.assign(a)
    ce, acc, b1 = search._feedback_step(x1, y1, x2, y2)
    assert float(b1) == pytest.approx(beta[0], rel=1e-5) and 0 < float(b1) < 1
    for v, k1, k2 in zip(search.w_vars, *paths):
        np.testing.assert_allclose(np.asarray(v), beta[0] * k1 + beta[1] * k2, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="alpha_data"):
        _search(model, feedback=True, alpha_data="same")


@pytest.mark.slow
def test_feedback_search_runs_and_records_the_path_weights():
    keras.utils.set_random_seed(0)
    model = sn.build_supernet(SPACE, seed=0)
    search = _search(model, feedback=True, epochs=1)
    rng = np.random.default_rng(3)
    ds = tf.data.Dataset.from_tensor_slices((rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32"),
                                             np.arange(16) % 10)).batch(4).repeat()
    history = search.run(ds, ds, steps_per_epoch=2)
    rec = history[-1]
    assert int(search.step.numpy()) == 2 and 0 < rec["feedback_beta1_mean"] < 1
    assert rec["feedback_beta1_abs_dev_max"] >= rec["feedback_beta1_abs_dev_mean"] >= 0
