"""FGNAS (issue 17): straight-through gates, the exact resource regularizer, export with compositional channels,
serialization, the stopping rule, and the space's checks."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import spec as S
from models.counting import count
from search import fgnas
from search.fgnas_space import FgnasSpace, mbconv_space, vgg_space
from search.fgnas_train import FgnasConfig, FgnasSearch

RNG = np.random.RandomState(0)


def _spaces():
    return {
        "vgg": vgg_space(4, (1, 3), ("relu", "prelu", "tanh"), input_size=16),
        "mbconv": mbconv_space((3, 5), ("relu6", "prelu"), expand=2, widths=(8, 8, 16, 16, 16), input_size=16),
    }


def _randomize(model, seed=0):
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        for w in layer.weights:
            if "moving_variance" in w.path:
                w.assign(rng.uniform(0.5, 1.5, w.shape))
            elif any(k in w.path for k in ("moving_mean", "beta", "alpha")):
                w.assign(rng.uniform(0.05, 0.3, w.shape))


def _net(space, seed=0):
    keras.utils.set_random_seed(seed)
    model = fgnas.build_supernet(space)
    _randomize(model, seed)
    return fgnas.FgnasSupernet(model, space)


def _random_arch(space, p=0.4, seed=1):
    rng = np.random.RandomState(seed)
    arch = [rng.rand(*a.shape) < p for a in space.full_arch()]
    for a in arch:
        a[0, 0] = True  # every layer keeps a channel
    return arch


def test_gate_forward_is_exactly_binary_and_gradients_reach_psi():
    psi = tf.Variable(RNG.normal(0, 2, (3, 50, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        g = fgnas.gate(psi)
        loss = tf.reduce_sum(g)
    values = np.unique(g.numpy())
    assert set(values.tolist()) <= {0.0, 1.0} and len(values) == 2
    np.testing.assert_array_equal(g.numpy(), (psi[..., 0] > psi[..., 1]).numpy().astype("float32"))
    grad = tape.gradient(loss, psi).numpy()
    s = 1 / (1 + np.exp(-(psi[..., 0] - psi[..., 1]).numpy()))
    np.testing.assert_allclose(grad[..., 0], s * (1 - s), rtol=1e-4, atol=1e-7)  # d softmax_on / d ψ_on
    np.testing.assert_allclose(grad[..., 1], -s * (1 - s), rtol=1e-4, atol=1e-7)


def test_binarize_is_binary_forward_identity_backward():
    x = tf.Variable([0.0, 2.0, 3.0, 0.0])
    with tf.GradientTape() as tape:
        y = fgnas.binarize(x)
        loss = tf.reduce_sum(y * [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(y.numpy(), [0, 1, 1, 0])
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), [1, 2, 3, 4])


def test_a_layer_with_every_gate_off_keeps_its_most_confident_one():
    space = _spaces()["vgg"]
    net = _net(space)
    layer = net.gated[1]
    psi = np.full(layer.psi.shape, 0.0, np.float32)
    psi[..., 1] = 1.0  # every gate off …
    psi[2, 3, 1] = 0.5  # … this one least
    layer.psi.assign(psi)
    gates = layer.hard_gates()
    assert gates.sum() == 1 and gates[2, 3]


@pytest.mark.parametrize("kind", ["vgg", "mbconv"])
def test_resource_equals_the_exact_count_of_the_derived_spec(kind):
    space = _spaces()[kind]
    net = _net(space)
    for arch in (space.full_arch(), space.single_op_arch(2), _random_arch(space)):
        net.set_arch(arch)
        spec = net.derive()
        for resource in ("params", "macs"):
            exact = count(spec).params if resource == "params" else count(spec).macs
            assert float(net.resource(resource)) == exact


def test_the_paper_input_count_counts_a_channel_once():
    space = _spaces()["vgg"]
    net = _net(space)
    net.set_arch(space.full_arch())  # every channel in all 6 operations
    deployed, paper = float(net.resource("macs")), float(net.resource("macs", input_count="paper"))
    assert paper < deployed
    one = space.single_op_arch(0)
    net.set_arch(one)  # no compositional channel: the two counts agree
    assert float(net.resource("macs")) == float(net.resource("macs", input_count="paper"))


@pytest.mark.parametrize("kind", ["vgg", "mbconv"])
def test_derived_model_equals_the_supernet_with_pruned_and_compositional_channels(kind):
    space = _spaces()[kind]
    net = _net(space)
    arch = _random_arch(space)
    net.set_arch(arch)
    rows = space.summary(arch)
    assert sum(r["pruned"] for r in rows) > 0 and sum(r["compositional"] for r in rows) > 0
    derived = net.derived_model()
    assert not any(isinstance(layer, fgnas._Gated) for layer in derived.layers)
    x = RNG.uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    want = net.model(x, training=False).numpy()
    got = derived(x, training=False).numpy()
    assert np.abs(want).max() > 1e-3
    assert np.abs(got - want).max() <= 1e-4
    spec = net.derive()
    assert S.decode(S.encode(spec)) == spec
    block = spec.stages[0][0]
    if kind == "vgg":  # branches in operation order, (kernel, activation) per branch
        ops = [space.ops[i] for i, _ in space.branches(arch[0])]
        assert list(zip(block.kernels, block.branch_acts())) == ops


@pytest.mark.parametrize("gating", ["no_prune", "one_op"])
def test_gating_ablations_hold_their_constraint_and_stay_exact(gating):
    """Table 7's gating variants: no_prune never prunes a channel, one_op never lets two operations share one; the
    derived model still equals the supernet and R its exact count."""
    space = _spaces()["vgg"]
    keras.utils.set_random_seed(0)
    model = fgnas.build_supernet(space, gating=gating)
    _randomize(model)
    net = fgnas.FgnasSupernet(model, space)
    net.set_arch(_random_arch(space, p=0.3))
    rows = space.summary(net.arch())
    if gating == "no_prune":
        assert sum(r["pruned"] for r in rows) == 0 and sum(r["compositional"] for r in rows) > 0
    else:
        assert sum(r["compositional"] for r in rows) == 0 and sum(r["pruned"] for r in rows) > 0
    assert float(net.resource("macs")) == count(net.derive()).macs
    x = RNG.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    assert np.abs(net.derived_model()(x, training=False).numpy() - model(x, training=False).numpy()).max() <= 1e-4
    with tf.GradientTape() as tape:
        r = net.resource("macs")
    grads = tape.gradient(r, fgnas.gate_variables(model))
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_supernet_saves_and_loads(tmp_path):
    space = _spaces()["vgg"]
    net = _net(space)
    net.set_arch(_random_arch(space))
    layer = net.gated[2]
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    x = RNG.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    path = str(tmp_path / "supernet.keras")
    net.model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), net.model(x, training=False).numpy(), atol=1e-6)


def test_space_checks():
    with pytest.raises(ValueError, match="max pool"):
        vgg_space(4, (1, 3), pool="max")
    vgg_space(4, (3,), pool="max")  # one operation: no channel sums several, a max pool is fine
    with pytest.raises(ValueError, match="kernels"):
        vgg_space(4, (2, 3))
    with pytest.raises(ValueError, match="acts"):
        vgg_space(4, (3,), ("relu", "gelu"))
    base = vgg_space(4).backbone
    fixed = S.MBConvSpec(kernels=(3,), split=(32,), expand_channels=None, filters=32, stride=1, act="relu")
    stages = base.stages[:-1] + ((fixed,),)
    with pytest.raises(ValueError, match="after a searched conv block"):
        FgnasSpace(dataclasses.replace(base, stages=stages))
    space = _spaces()["vgg"]
    with pytest.raises(ValueError, match="every channel is pruned"):
        space.check_arch([np.zeros_like(a) for a in space.full_arch()])


def _shapes_space(classes):
    space = vgg_space(4, (1, 3), ("relu", "tanh"), input_size=16)
    head = dataclasses.replace(space.backbone.head, classes=classes)
    return dataclasses.replace(space, backbone=dataclasses.replace(space.backbone, head=head))


def _tiny_search(tmp_path, seed=0):
    from inputs.classification import load
    ds, info = load("shapes", "train", image_size=16, batch_size=32, training=True, repeat=True, limit=128)
    space = _shapes_space(info.num_classes)
    keras.utils.set_random_seed(seed)
    full = space.cost(space.full_arch())
    config = FgnasConfig(target=0.5 * full, pretrain_epochs=1, search_epochs=6, lam=2.0, psi_lr=100.0)
    search = FgnasSearch(fgnas.build_supernet(space), space, config, checkpoint_dir=str(tmp_path / "ckpt"))
    return search, search.run(ds, 3), full


@pytest.mark.slow  # ~10 s: the fast tier stays within 3 minutes
def test_search_stops_at_the_target_and_resumes_with_frozen_gates(tmp_path):
    search, history, full = _tiny_search(tmp_path)
    assert history[0]["phase"] == "pretrain" and history[0]["macs"] == full
    assert search.reached and history[-1]["reached"]
    assert history[-1]["macs"] <= search.config.target == 0.5 * full
    assert history[-1]["macs"] == search.net.cost() == count(search.net.derive()).macs
    refill = history[-1]["refill"]  # the stopping step is followed by the refill (on by default)
    assert refill["before"] <= refill["after"] == history[-1]["macs"] <= search.config.target
    arch, steps = search.net.arch(), int(search.step.numpy())
    again, _, _ = _tiny_search(tmp_path, seed=1)  # other initial weights: all restored from the checkpoint
    assert int(again.step.numpy()) == steps
    assert all((a == b).all() for a, b in zip(again.net.arch(), arch))


@pytest.mark.parametrize("kind", ["vgg", "mbconv"])
def test_refill_gives_back_what_fits_under_the_target(kind):
    """After a stopping step that overshot far below the target, refill turns back on only gates that were off,
    closest to on first, and ends at or below the target, within its tolerance or with nothing more that fits."""
    space = _spaces()[kind]
    keras.utils.set_random_seed(0)
    model = fgnas.build_supernet(space)
    full = space.cost(space.full_arch())
    search = FgnasSearch(model, space, FgnasConfig(target=0.6 * full))
    arch = _random_arch(space, p=0.25)
    search.net.set_arch(arch, margin=1.0)
    rng = np.random.RandomState(3)
    for v in search.psi_vars:  # distinct margins among the off gates: an order to follow
        p = v.numpy()
        p[..., 1] += np.where(p[..., 0] < p[..., 1], rng.uniform(0, 1, p.shape[:2]), 0).astype(np.float32)
        v.assign(p)
    margins = [v.numpy()[..., 0] - v.numpy()[..., 1] for v in search.psi_vars]
    before = search.net.cost()
    assert before < 0.5 * full
    info = search.refill(tolerance=0.01)
    after = search.net.arch()
    assert info["before"] == pytest.approx(before) and info["after"] == pytest.approx(search.net.cost())
    assert before < search.net.cost() <= search.config.target == 0.6 * full
    assert search.net.cost() == count(search.net.derive()).macs  # still exact
    assert all((b | ~a).all() for a, b in zip(arch, after))  # nothing that was on went off
    on = np.concatenate([m[b & ~a] for a, b, m in zip(arch, after, margins)])
    still_off = np.concatenate([m[~b] for b, m in zip(after, margins)])
    assert info["gates_turned_on"] == on.size > 0
    # the closest-to-on gates came first: no gate left off was closer to on than every gate turned on
    assert still_off.size == 0 or still_off.max() <= on.max()
    assert search.net.cost() >= 0.99 * search.config.target or info["gates_tried"] == int((~np.concatenate(
        [a.ravel() for a in arch])).sum())


def _synthetic_latency(space, seed=0):
    from search.fgnas_latency import AffineLatency, condition_keys
    rng = np.random.RandomState(seed)
    keys = {k for layer in condition_keys(space) for k in layer}
    return AffineLatency({k: (float(rng.uniform(0.001, 0.01)), float(rng.uniform(1e-8, 1e-7))) for k in keys}, 0.05,
                         0.9)


def test_latency_fit_recovers_an_affine_relation():
    from search.fgnas_latency import AffineLatency, fit
    macs = np.array([1e5, 2e5, 4e5, 8e5])
    coefs = fit({"conv|x": [[m, 0.02 + 3e-8 * m] for m in macs], "one": [[1e5, 0.01]]})
    assert coefs["conv|x"] == pytest.approx((0.02, 3e-8), rel=1e-6)
    assert coefs["one"] == pytest.approx((0.0, 1e-7))
    # a tiny op timed net of the invocation overhead can come out below zero: its slope is 0, never negative
    # (CI stop 27 failed on exactly this with one measured size per condition)
    assert fit({"tiny": [[5e3, -0.0004]]})["tiny"] == (0.0, 0.0)
    model = AffineLatency(coefs, 0.1, 0.8, {"host": "x"})
    assert AffineLatency.from_json(model.to_json()) == model


@pytest.mark.parametrize("kind", ["vgg", "mbconv"])
def test_latency_regularizer_is_the_model_prediction_and_reaches_the_gates(kind):
    space = _spaces()[kind]
    net = _net(space)
    model = _synthetic_latency(space)
    for arch in (space.full_arch(), _random_arch(space)):
        net.set_arch(arch)
        with tf.GradientTape() as tape:
            r = net.resource("latency", latency=model)
        assert float(r) == pytest.approx(model.predict(space, net.arch()), rel=1e-5)
        grads = tape.gradient(r, fgnas.gate_variables(net.model))
        assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="latency model"):
        net.resource("latency")


def test_mbconv_width_multiplier_scales_like_mobilenet_v2(tmp_path):
    """``mbconv_space(width_mult=…)`` (the E3 baseline): stem and block widths × the multiplier in multiples of 8,
    the full-width space unchanged; the E3 driver refuses bad flags with one line."""
    from conftest import error_line, run_module

    from models.counting import count
    full, x75 = mbconv_space().backbone, mbconv_space(width_mult=0.75).backbone
    assert full.name == "fgnas_mbconv" and x75.name == "fgnas_mbconv_x0p75"
    assert x75.stem.filters == 24 and [b.filters for _, _, b in x75.blocks()] == [16, 24, 24, 24, 24, 48, 48, 72]
    assert all(b.filters % 8 == 0 for _, _, b in x75.blocks()) and count(x75).macs < count(full).macs
    with pytest.raises(ValueError, match="width_mult"):
        mbconv_space(width_mult=0)
    for args, needle in ((["--arms=L,Q"], "--arms"), (["--multiplier=1.5"], "--multiplier"),
                         (["--dataset=shapes", f"--latency_model={tmp_path / 'none.json'}"], "--latency_model")):
        r = run_module("benchmarks.fgnas_latency_search", f"--out={tmp_path / 'x.json'}", *args)
        assert needle in error_line(r, "fgnas_latency_search"), r.stderr
