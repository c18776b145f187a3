"""Meta-kernel layers, the supernet, expected cost and derive/extract (fast, tiny CIFAR-sized space)."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.counting import count
from models.spec import decode, encode
from search import PACKAGE
from search import supernet as sn
from search.metakernel import MetaKernelDepthwise, MultiPathDepthwise, kernel_masks
from search.metakernel_space import cifar_space, imagenet_space
from search.protocol import SearchBlock, Supernet

SPACE = cifar_space(width=0.25, candidates=(3, 5, 7))


def test_masks_are_centred_and_none_is_zero():
    m = kernel_masks((5, 3, 7))
    assert m.shape == (4, 7, 7)
    assert m[0].sum() == 0
    assert [int(x.sum()) for x in m[1:]] == [9, 25, 49]
    assert m[1][2:5, 2:5].all() and m[1].sum() == 9
    assert m[2][1:6, 1:6].all()
    no_none = kernel_masks((3, 5), allow_none=False)
    assert no_none.shape == (2, 5, 5) and no_none[0].sum() == 9


@pytest.mark.parametrize("bad", [(), (3, 4), (3, 3), (0,), (-1, 3)])
def test_bad_candidates_are_refused(bad):
    with pytest.raises(ValueError, match="candidates"):
        kernel_masks(bad)


@pytest.mark.parametrize("stride,size", [(1, 9), (2, 8), (2, 9)])
@pytest.mark.parametrize("choice,k", [(1, 3), (2, 5), (3, 7)])
def test_fixed_choice_equals_plain_depthwise_on_cropped_weights(stride, size, choice, k):
    rng = np.random.default_rng(0)
    layer = MetaKernelDepthwise((3, 5, 7), strides=stride)
    x = rng.normal(size=(2, size, size, 6)).astype("float32")
    layer(x)
    layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    alpha = np.full((6, 4), -5.0, np.float32)
    alpha[:, choice] = 5.0
    layer.alpha.assign(alpha)
    y = np.asarray(layer(x, training=False))  # one-hot argmax
    plain = keras.layers.DepthwiseConv2D(k, strides=stride, padding="same", use_bias=False)
    plain.build(x.shape)
    plain.kernel.assign(layer.crop(k))
    np.testing.assert_allclose(y, np.asarray(plain(x)), atol=1e-5)


def test_none_choice_gives_zero_output_and_one_conv_per_step():
    layer = MetaKernelDepthwise((3, 5, 7))
    x = np.ones((1, 8, 8, 4), np.float32)
    layer(x)
    layer.alpha.assign(np.tile([[5.0, 0.0, 0.0, 0.0]], (4, 1)))
    assert np.abs(np.asarray(layer(x, training=False))).max() == 0.0
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(
        tf.TensorSpec((1, 8, 8, 4))).graph
    ops_ = [op.type for op in graph.get_operations()]
    assert ops_.count("DepthwiseConv2dNative") == 1
    multi = MultiPathDepthwise((3, 5, 7))
    multi(x)
    graph = tf.function(lambda t: multi(t, training=True)).get_concrete_function(tf.TensorSpec((1, 8, 8, 4))).graph
    assert [op.type for op in graph.get_operations()].count("DepthwiseConv2dNative") == 3


def test_gumbel_samples_follow_alpha_and_temperature():
    layer = MetaKernelDepthwise((3, 5), seed=3, tau=1.0)
    layer(np.zeros((1, 5, 5, 2000), np.float32))
    layer.alpha.assign(np.tile(np.log([[0.2, 0.3, 0.5]]).astype(np.float32), (2000, 1)))
    p = np.asarray(layer.sample(True))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    freq = np.bincount(p.argmax(-1), minlength=3) / 2000  # argmax of Gumbel-perturbed logits ~ Categorical(softmax α)
    np.testing.assert_allclose(freq, [0.2, 0.3, 0.5], atol=0.04)
    layer.tau.assign(0.05)
    assert np.asarray(layer.sample(True)).max(-1).mean() > 0.95  # low temperature → nearly one-hot


@pytest.mark.parametrize("cls", [MetaKernelDepthwise, MultiPathDepthwise])
def test_gradients_reach_alpha(cls):
    layer = cls((3, 5, 7), seed=0)
    x = tf.random.normal((2, 8, 8, 4), seed=1)
    layer(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) ** 2)
    g_alpha, g_kernel = tape.gradient(loss, [layer.alpha, layer.trainable_weights[-1]])
    assert g_alpha is not None and np.abs(np.asarray(g_alpha)).sum() > 0
    assert g_kernel is not None


def test_layer_configs_round_trip_with_non_default_arguments():
    for cls in (MetaKernelDepthwise, MultiPathDepthwise):
        layer = cls((9, 3, 5), strides=2, allow_none=False, per_filter=False, tau=2.5, alpha_init_std=0.1, seed=7,
                    name="x")
        clone = cls.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        assert clone.candidates == (3, 5, 9) and clone.strides == 2 and not clone.allow_none
    block = sn.SearchMBConv(24, 48, 2, "hswish", 6, (3, 7), dw_mode="multi", skip=False, bn_epsilon=1e-5,
                            bn_momentum=0.9, tau=3.0, seed=5, name="b")
    clone = sn.SearchMBConv.from_config(block.get_config())
    assert clone.get_config() == block.get_config()


@pytest.mark.slow
def test_supernet_saves_and_loads_as_keras_file(tmp_path):
    model = sn.build_supernet(SPACE, seed=0, alpha_init_std=1.0)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = str(tmp_path / "supernet.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(sn.arch_variables(loaded)[3]), np.asarray(sn.arch_variables(model)[3]))


def _one_hot_logits(model, rng, p_none=0.3):
    """Random hard choices as ±10 logits; returns the per-block choice arrays."""
    out = []
    for block in sn.search_blocks(model):
        a = np.asarray(block.dw.alpha)
        rows, m = a.shape
        if block.dw.allow_none:
            c = np.where(rng.random(rows) < p_none, 0, rng.integers(1, m, rows))
            c[rng.integers(rows)] = rng.integers(1, m)  # keep at least one filter
        else:
            c = rng.integers(0, m, rows)
        logits = np.full((rows, m), -10.0, np.float32)
        logits[np.arange(rows), c] = 10.0
        block.dw.alpha.assign(logits)
        out.append(c)
    return out


def _randomise_bn(model, rng):
    for v in model.weights:
        name = v.name.split("/")[-1]
        if name in ("moving_mean", "beta", "gamma", "moving_variance"):
            shape = v.shape
            value = rng.normal(0, 0.3, shape) if name in ("moving_mean", "beta") else rng.uniform(0.5, 1.5, shape)
            v.assign(value.astype("float32"))


def test_expected_cost_equals_exact_count_of_derived_spec_when_one_hot():
    model = sn.build_supernet(SPACE, seed=0)
    net = sn.MetaKernelSupernet(model, SPACE)
    rng = np.random.default_rng(1)
    for _ in range(3):
        _one_hot_logits(model, rng)
        spec = net.derive(name="derived")
        # softmax of ±10 logits is one-hot to ~1e-8 relative: compare with the exact one-hot probabilities
        probs = [np.eye(b.dw.num_choices, dtype=np.float32)[np.argmax(np.asarray(b.dw.alpha), -1)]
                 for b in sn.search_blocks(model)]
        macs, params = sn.expected_cost(model, SPACE, probs)
        exact = count(spec)
        assert int(round(float(macs))) == exact.macs
        assert int(round(float(params))) == exact.params
        soft_macs, _ = sn.expected_cost(model, SPACE)
        assert abs(float(soft_macs) - exact.macs) / exact.macs < 1e-4


def test_expected_cost_of_the_unpruned_kmax_supernet_is_the_skeleton_count():
    model = sn.build_supernet(SPACE, dw_mode="fixed")
    macs, params = sn.expected_cost(model, SPACE)
    exact = count(SPACE.skeleton())
    assert (int(float(macs)), int(float(params))) == (exact.macs, exact.params)
    assert exact.params == sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_derive_and_extract_match_the_supernet_with_hard_choices():
    model = sn.build_supernet(SPACE, seed=0)
    rng = np.random.default_rng(2)
    choice = _one_hot_logits(model, rng, p_none=0.4)
    _randomise_bn(model, rng)
    net = sn.MetaKernelSupernet(model, SPACE)
    spec = net.derive(name="derived")
    assert decode(encode(spec)) == spec
    mixed = [b for _, _, b in spec.blocks() if len(b.kernels) > 1]
    assert mixed, "the random choice should give mixed-kernel blocks"
    pruned = [b for (_, _, b), s in zip(spec.blocks(), SPACE.blocks()) if s.expand and b.expand_channels < s.expand]
    assert pruned, "the random choice should prune filters"
    derived = net.derived_model(spec=spec)
    assert not any(isinstance(layer, (sn.SearchMBConv,)) for layer in derived.layers)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y_super = np.asarray(model(x, training=False))
    y_derived = np.asarray(derived(x, training=False))
    assert np.abs(y_super - y_derived).max() <= 1e-4
    assert [len(c) for c in choice] == [b.dw.alpha.shape[0] for b in sn.search_blocks(model)]


def test_all_pruned_block_keeps_one_filter():
    model = sn.build_supernet(SPACE, seed=0)
    block = sn.search_blocks(model)[1]
    a = np.zeros(block.dw.alpha.shape, np.float32)
    a[:, 0] = 5.0
    a[2, 2] = 4.0
    block.dw.alpha.assign(a)
    spec = sn.MetaKernelSupernet(model, SPACE).derive(name="d")
    b = spec.stages[1][0]
    assert b.expand_channels == 1 and b.kernels == (5,)


def test_multi_path_supernet_derives_and_extracts_too():
    model = sn.build_supernet(SPACE, dw_mode="multi", seed=0)
    rng = np.random.default_rng(3)
    _one_hot_logits(model, rng)
    derived = sn.MetaKernelSupernet(model, SPACE).derived_model()
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert np.abs(np.asarray(model(x, training=False)) - np.asarray(derived(x, training=False))).max() <= 1e-4


def test_imagenet_space_brackets_the_papers_targets():
    space = imagenet_space()
    thinnest, widest = space.macs_range()
    assert thinnest < 260e6 < 370e6 < widest
    assert dataclasses.replace(space.skeleton(), name="x").input.size == 224


def test_projection_lands_on_reachable_targets_and_leaves_a_close_argmax_alone():
    net = sn.MetaKernelSupernet(sn.build_supernet(SPACE, seed=0, alpha_init_std=1.0), SPACE)
    lo, hi = SPACE.macs_range()
    argmax = count(net.derive(name="d")).macs
    choice, moves, macs = net.project_to_target(argmax * 1.01)
    assert moves == 0 and macs == argmax
    for frac in (0.15, 0.4, 0.8):
        target = lo + frac * (hi - lo)
        choice, moves, macs = net.project_to_target(target)
        spec = net.derive(choice, name="p")
        assert count(spec).macs == macs and abs(macs / target - 1) < 0.01, (frac, macs, target)
        assert all(b.expand_channels is None or b.expand_channels >= 1 for _, _, b in spec.blocks())


@pytest.mark.parametrize("dw_mode", ["meta", "multi"])
def test_protocol_derived_model_equals_the_supernet_at_that_architecture(dw_mode):
    model = sn.build_supernet(SPACE, dw_mode=dw_mode, seed=0)
    net = sn.MetaKernelSupernet(model, SPACE)
    assert isinstance(net, Supernet) and all(isinstance(b, SearchBlock) for b in net.blocks)
    rng = np.random.default_rng(4)
    arch = _one_hot_logits(model, rng, p_none=0.3)  # the supernet now runs exactly ``arch`` at inference
    _randomise_bn(model, rng)
    derived = net.derived_model(arch)
    x = rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    assert np.abs(np.asarray(model(x, training=False)) - np.asarray(derived(x, training=False))).max() <= 1e-4


def test_protocol_derive_extract_round_trip():
    model = sn.build_supernet(SPACE, seed=0)
    net = sn.MetaKernelSupernet(model, SPACE)
    arch = _one_hot_logits(model, np.random.default_rng(5), p_none=0.3)
    spec = net.derive(arch, name="round_trip")
    assert decode(encode(spec)) == spec and spec.name == "round_trip"
    assert [b for _, _, b in spec.blocks()] == [blk.derive_block(c) for blk, c in zip(net.blocks, arch)]
    weights = net.extract(arch)
    np.testing.assert_equal(weights, net.extract(arch, spec))
    from models.builder import build
    derived = build(spec)
    shapes = {f"{layer.name}/{v.name.split('/')[-1]}": tuple(v.shape) for layer in derived.layers
              for v in layer.weights}
    assert {k: w.shape for k, w in weights.items()} == shapes
    other = net.derive([np.full_like(c, 1) for c in arch], name="other")  # every filter at 3×3
    with pytest.raises(ValueError, match="does not match"):
        net.extract(arch, other)


def test_search_layers_register_under_one_package():
    for cls in (sn.SearchMBConv, MetaKernelDepthwise, MultiPathDepthwise):
        assert keras.saving.get_registered_name(cls) == f"{PACKAGE}>{cls.__name__}"


@pytest.mark.slow
def test_lite0_space_supernet_reproduces_lite0():
    """issue 15, step 1: Lite0 is a member of the lite0 space; the supernet seeded with its ImageNet weights (meta
    kernels = its kernels zero-padded to 7×7) and α at its kernel sizes gives Lite0's logits, derives Lite0's spec
    and extracts its weights back unchanged."""
    import zoo
    from models.spec import encode
    from models.weights import read_npz
    from search.metakernel_space import lite0_space
    from search.supernet import MetaKernelSupernet, build_supernet
    space = lite0_space()
    spec = zoo.get_spec("efficientnet_lite0")
    assert encode(space.skeleton(3))["stages"] != encode(spec)["stages"]  # Lite0 mixes 3×3 and 5×5 stages
    net = MetaKernelSupernet(build_supernet(space), space)
    arrays = read_npz(zoo.weights_path("efficientnet_lite0", "imagenet"))
    net.inherit(arrays, spec)
    arch = net.member_choice(spec)
    net.set_choice(arch)
    lite = zoo.build("efficientnet_lite0", weights="imagenet")
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    ref = lite.predict(x, verbose=0)
    assert np.abs(net.model.predict(x, verbose=0) - ref).max() <= 1e-4 and np.abs(ref).max() > 1
    derived = net.derive(arch, name=spec.name)
    assert encode(derived)["stages"] == encode(spec)["stages"]
    extracted = net.extract(arch, derived)
    assert set(extracted) == set(arrays) and all(np.array_equal(extracted[k], arrays[k]) for k in arrays)
    stages = [list(st) for st in spec.stages]
    stages[1][0] = dataclasses.replace(stages[1][0], kernels=(3, 5), split=(48, 48))  # a MixConv block
    with pytest.raises(ValueError, match="s1_b0: .*not one kernel size"):
        net.member_choice(dataclasses.replace(spec, stages=tuple(tuple(st) for st in stages)))


def test_lite0_seeding_keeps_a_fresh_classifier_for_other_classes():
    """--space=lite0 on a 10-class dataset: everything but the classifier comes from Lite0's ImageNet weights."""
    import zoo
    from models.weights import read_npz
    from search.metakernel_space import lite0_space
    from workflows.search_metakernel import inherit_lite0
    space = lite0_space(classes=10).replace(input_size=64)
    net = sn.MetaKernelSupernet(sn.build_supernet(space), space)
    fresh = np.asarray(net.model.get_layer("classifier").kernel)
    inherit_lite0(net, 10)
    arrays = read_npz(zoo.weights_path("efficientnet_lite0", "imagenet"))
    np.testing.assert_array_equal(np.asarray(net.model.get_layer("stem_conv").kernel), arrays["stem_conv/kernel"])
    np.testing.assert_array_equal(net.blocks[3].dw.crop(5), arrays["s2_b0_dw/kernel"])  # a 5×5 stage, zero-padded
    assert not np.asarray(net.blocks[3].dw.kernel)[0].any()  # the outer ring of the 7×7 meta kernel is zero
    np.testing.assert_array_equal(np.asarray(net.model.get_layer("classifier").kernel), fresh)


@pytest.mark.slow
def test_lite0_baselines_crop_and_l1_prune_to_a_budget():
    """issue 15's baselines as architectures of the seeded supernet: 5×5 → 3×3 crops, and L1-norm channel pruning
    with one kept share for every block landing on the MACs budget."""
    import zoo
    from models.weights import read_npz
    from search.metakernel_space import lite0_space
    from search.pruning import crop_kernels, l1_importance, l1_prune
    space = lite0_space()
    net = sn.MetaKernelSupernet(sn.build_supernet(space), space)
    spec = zoo.get_spec("efficientnet_lite0")
    net.inherit(read_npz(zoo.weights_path("efficientnet_lite0", "imagenet")), spec)
    lite0 = net.member_choice(spec)
    cropped = crop_kernels(net, lite0, {5: 3})
    assert all(k == 3 for b in net.derive(cropped).stages for blk in b for k in blk.kernels)
    pruned, share, macs = l1_prune(net, cropped, 260e6)
    assert abs(macs / 260e6 - 1) <= 0.01 and 0.5 < share < 0.8 and net.macs(pruned) == macs
    block = net.blocks[4]  # s2_b1: 240 expanded filters
    kept = np.flatnonzero(pruned[4] != 0)
    top = np.argsort(-l1_importance(block), kind="stable")[:len(kept)]
    assert set(kept) == set(top) and len(kept) == int(np.ceil(share * 240))
    with pytest.raises(ValueError, match="outside what pruning reaches"):
        l1_prune(net, lite0, 500e6)


def test_single_candidate_takes_no_softmax_over_one_choice():
    """A layer without "None" and one candidate (``--candidates=1``'s fixed blocks): weight 1, and no Keras
    warning about a softmax over an axis of size 1."""
    import warnings
    layer = MetaKernelDepthwise((3,), allow_none=False, per_filter=False)
    layer.build((None, 8, 8, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.probabilities()), [[1.0]])
        for training in (True, False):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.sample(training)), [[1.0]])
        layer(np.zeros((1, 8, 8, 4), np.float32), training=True)
