"""Single Path One-Shot: one path per step (gradients and optimizer), channel slicing, fake-quant ranges, constraint
sampling, evolution validity and resume, BN recalibration, derived-model equivalence, BitOps, and the recipe.

Speed (the file must stay around a minute on two busy cores): the in-process supernet tests run its ``tf.function``s
eagerly (``tf.config.run_functions_eagerly``, the ``fast`` fixture) — same ops, same tape, no tracing. Tracing is
what costs: the compiled per-branch eager step and the traced graph step are compared in
``test_graph_step_equals_eager_step`` (≈ 15–25 s on its own: it traces the graph step).
The recipe's end-to-end run starts in the background when the module starts and is checked at the end.
"""
import contextlib
import dataclasses
import json
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import error_line, run_module, run_python

from models import spec as S
from models.builder import build
from models.counting import bitops, block_macs, count
from search import PACKAGE
from search import evolution as ev
from search import spos as sp
from search.protocol import SearchBlock, Supernet
from search.spos_net import ChoiceBlock, SlicedConvBN, SposSupernet, build_supernet, pact, quantize_weights
from search.spos_train import CandidateEvaluator, SinglePathSGD, SposConfig, SposTrainer

# Two stages: a stride-2 and a stride-1 block, then a stride-2 block; two channel ratios; all four block choices.
SPACE = sp.SposSpace(16, 8, 1, (2, 1), (16, 40), 64, 10, channel_ratios=(0.5, 1.0))
# Searched fields everywhere (4 choices × 2 ratios × 3 bit widths per block), for the cost-only tests.
QSPACE = sp.cifar_space(0.25, (1, 1, 1, 1), channel_ratios=(0.5, 1.0), bits=((1, 2), (2, 4), (4, 4)))

# The recipe's end-to-end run executes its ``__main__`` as ``python -m`` does, with tf.functions run eagerly: the
# per-branch tracing otherwise takes it from ~25 s to ~65 s here.
MAX_MACS = 1.1e6  # cifar_space(0.25, depth 1,1,1,1, 10 classes): smallest path 896,768 MACs, largest 1,329,792
RECIPE_ARGS = ["--dataset=shapes", "--depth=1,1,1,1", "--epochs=1", "--steps_per_epoch=3", "--limit=256",
               "--batch_size=16", "--population=4", "--iterations=2", "--top_k=2", "--recal_images=64",
               "--val_images=64", "--eval_batch=64", f"--max_macs={MAX_MACS}", "--noprogress"]
EAGER_MAIN = ("import runpy, sys, tensorflow as tf; tf.config.run_functions_eagerly(True); "
              "sys.argv = ['search_spos'] + sys.argv[1:]; "
              "runpy.run_module('recipes.search_spos', run_name='__main__', alter_sys=True)")


@pytest.fixture(scope="module", autouse=True)
def recipe_runs(request, tmp_path_factory):
    """Starts the recipe subprocesses in the background (each only when its test is selected); they overlap with the
    in-process tests on the other core and are reaped (or killed, by pid) at module teardown."""
    runs = {}
    selected = {item.name.split("[")[0] for item in request.session.items if item.module.__name__ == __name__}
    d = tmp_path_factory.mktemp("spos_recipe")
    if "test_recipe_end_to_end" in selected:
        runs["e2e"] = (d / "run", d / "e2e.log",
                       run_python(EAGER_MAIN, *RECIPE_ARGS, f"--out_dir={d / 'run'}", wait=False, log=d / "e2e.log"))
    if "test_recipe_graph_execution_on_two_mirrored_replicas" in selected:
        # graph execution on two logical CPU replicas: BN statistics updated inside tf.switch_case per replica; two
        # block choices (one k×k unit, one Xception-like) halve the trace of every case op and its gradient
        # progress left on: the log is not a terminal, so it must hold no bar redraws
        mirrored = [a for a in RECIPE_ARGS if a != "--noprogress"] + [
            "--phase=supernet", "--steps_per_epoch=2", "--strategy=mirrored", "--cpu_replicas=2", "--execution=graph",
            "--choices=3,x"]
        runs["mirrored"] = (d / "mirrored", d / "mirrored.log",
                            run_module("recipes.search_spos", *mirrored, f"--out_dir={d / 'mirrored'}", wait=False,
                                       log=d / "mirrored.log"))
    yield runs
    for _, _, proc in runs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _finish(run):
    out, log, proc = run
    rc = proc.wait(timeout=600)
    return out, rc, log.read_text()


@contextlib.contextmanager
def _eager_functions():
    """``tf.function``s run eagerly inside (same ops and tape, no tracing); restores the previous setting."""
    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(before)


@pytest.fixture
def fast():
    with _eager_functions():
        yield


@pytest.fixture(scope="module")
def net():
    with _eager_functions():
        return build_supernet(SPACE, seed=0)


def _images(n, size=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def _sliced_layers(m):
    return [m.stem, m.head] + [op for b in m.blocks for op in b.ops]


def _bn_width(op, cin, cout):
    return cin if op.kind == "dw" else (op.cout if cout is None else cout)


def _state(variables):
    return [v.numpy().copy() for v in variables]


# ---------------------------------------------------------------------------------------------------------------------
# 1. One path per step


@pytest.mark.slow
def test_only_the_sampled_path_gets_gradients(net, fast):
    """Unsampled choices get no gradient at all (None); sampled ones get non-zero gradients exactly inside their
    channel slice."""
    arch = np.array([[3, 0, 0], [0, 1, 0], [2, 0, 0]], np.int32)  # x (narrow), 3 (wide, stride 1), 7 (narrow)
    x = tf.constant(_images(4))
    y = tf.one_hot([1, 2, 3, 4], SPACE.classes)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, net(x, arch, mode="train")))
    variables = net.trainable_variables
    grads = {id(v): g for v, g in zip(variables, tape.gradient(loss, variables))}
    for layer in (net.stem, net.head, net.classifier):
        for v in layer.trainable_variables:
            assert grads[id(v)] is not None and np.any(grads[id(v)].numpy() != 0), v.path
    n_sampled = n_unsampled = 0
    for block, row in zip(net.blocks, arch):
        path = {id(op): (op, cin, cout) for op, cin, cout in block.path_ops(row)}
        assert len(path) == (3 if row[0] < 3 else 6) + (2 if block.stride == 2 else 0)
        for op in block.ops:
            if id(op) not in path:
                for v in op.trainable_variables:
                    assert grads[id(v)] is None, f"unsampled {v.path} got a gradient"
                    n_unsampled += 1
                continue
            _, cin, cout = path[id(op)]
            c = _bn_width(op, cin, cout)
            gk = grads[id(op.kernel)].numpy()
            inside = gk[:, :, :cin, :] if op.kind == "dw" else gk[:, :, :cin, :c]
            assert np.any(inside != 0), op.name
            assert np.count_nonzero(gk) == np.count_nonzero(inside), f"{op.name}: gradient outside its slice"
            for v in (op.gamma, op.beta):
                g = grads[id(v)].numpy()
                assert np.any(g[:c] != 0) and not np.any(g[c:]), v.path
            n_sampled += 3
    assert n_sampled > 0 and n_unsampled > n_sampled


@pytest.mark.parametrize("nesterov", [True, False])
def test_single_path_sgd_matches_pytorch_sgd(nesterov):
    """Three steps against PyTorch's SGD formula written out (momentum, Nesterov or not, weight decay on kernels
    only); a variable whose gradient is all zero at a step keeps its value and momentum exactly."""
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)
    kernel, bias = tf.Variable(w0), tf.Variable(b0)
    opt = SinglePathSGD(0.1, momentum=0.9, nesterov=nesterov, decay=0.01)
    opt.build([kernel, bias])
    grads = [(rng.normal(size=w0.shape), rng.normal(size=b0.shape)), (np.zeros(w0.shape), rng.normal(size=b0.shape)),
             (rng.normal(size=w0.shape), np.zeros(b0.shape))]
    ref = {"w": w0.astype(np.float64), "b": b0.astype(np.float64), "mw": 0.0, "mb": 0.0}
    for gw, gb in grads:
        opt.apply_gradients([(tf.constant(gw, tf.float32), kernel), (tf.constant(gb, tf.float32), bias)])
        for name, g, decay in (("w", gw, 0.01), ("b", gb, 0.0)):
            if not np.any(g):
                continue
            g = g + decay * ref[name]
            ref["m" + name] = 0.9 * ref["m" + name] + g
            ref[name] = ref[name] - 0.1 * ((g + 0.9 * ref["m" + name]) if nesterov else ref["m" + name])
        np.testing.assert_allclose(kernel.numpy(), ref["w"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bias.numpy(), ref["b"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(opt.momentums[0].numpy(), ref["mw"], rtol=1e-5, atol=1e-6)
    before = (kernel.numpy().copy(), opt.momentums[0].numpy().copy())
    opt.apply_gradients([(tf.zeros_like(kernel), kernel), (tf.ones_like(bias), bias)])
    np.testing.assert_array_equal(kernel.numpy(), before[0])  # bit-for-bit: inactive
    np.testing.assert_array_equal(opt.momentums[0].numpy(), before[1])


def test_single_path_sgd_path_flags_decide_what_moves():
    """Inside ``opt.path(flags)`` the flags, not the gradients, say what the path used: a used kernel with an
    all-zero gradient still gets its momentum and weight-decay update (PyTorch updates every parameter that has a
    gradient tensor); ``False`` (any gradient) and a false bool tensor (with the zero gradient an unsampled branch
    gets) leave variable and momentum bit-for-bit unchanged; a true tensor equals ``True``."""
    rng = np.random.default_rng(1)
    w0 = [rng.normal(size=(2, 3)).astype(np.float32) for _ in range(4)]
    for graph in (False, True):
        vs = [tf.Variable(w) for w in w0]
        opt = SinglePathSGD(0.1, momentum=0.9, nesterov=True, decay=0.01)
        opt.build(vs)
        for m in opt.momentums:
            m.assign(tf.ones_like(m))
        g = [np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32),
             rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)]

        def apply(on, off):
            with opt.path([True, off, on, False]):  # the tensors on/off are shared, as in the trainer
                opt.apply_gradients(zip([tf.constant(x) for x in g], vs))
        step = tf.function(apply) if graph else apply
        step(tf.constant(True), tf.constant(False))
        assert not opt._gates  # the cache does not outlive the context
        for i in (1, 3):  # inactive: untouched (3: although its gradient is non-zero)
            np.testing.assert_array_equal(vs[i].numpy(), w0[i])
            np.testing.assert_array_equal(opt.momentums[i].numpy(), np.ones((2, 3)))
        for i in (0, 2):  # active (True, or a true tensor): PyTorch's Nesterov SGD with decay, even for g = 0
            gi = g[i] + 0.01 * w0[i]
            m = 0.9 * 1.0 + gi
            np.testing.assert_allclose(opt.momentums[i].numpy(), m, rtol=1e-6)
            np.testing.assert_allclose(vs[i].numpy(), w0[i] - 0.1 * (gi + 0.9 * m), rtol=1e-5, atol=1e-6)


def test_variable_choices_assigns_every_variable_once(net):
    """Every trainable variable of a block belongs to exactly one block choice (the one whose ops hold it); the
    stem, head and classifier belong to every path (None)."""
    owners = net.variable_choices()
    variables = net.weight_variables()
    assert len(owners) == len(variables)
    by_id = dict(zip(map(id, variables), owners))
    shared = [v for layer in (net.stem, net.head, net.classifier) for v in layer.trainable_variables]
    assert {by_id[id(v)] for v in shared} == {None}
    assert sum(o is None for o in owners) == len(shared)
    for b, block in enumerate(net.blocks):
        for c in range(len(block.choices)):
            row = sp.largest(net.space)[b].copy()
            row[0] = c
            for op, _, _ in block.path_ops(row):
                assert {by_id[id(v)] for v in op.trainable_variables} == {(b, c)}, op.name


def test_single_path_sgd_skips_unsampled_variables_and_momentum(net, fast):
    """Two steps on disjoint choices: after step 2 the choices of step 1 keep their values *and* their (non-zero)
    momentum — plain SGD with momentum and weight decay would keep moving them."""
    arch_a = np.array([[0, 0, 0], [1, 1, 0], [2, 1, 0]], np.int32)
    arch_b = np.array([[3, 1, 0], [2, 0, 0], [1, 0, 0]], np.int32)
    trainer = SposTrainer(net, SposConfig(epochs=2, lr=0.1, weight_decay=1e-3, sampling="uniform"))
    assert isinstance(trainer.opt, SinglePathSGD)
    archs = iter([arch_a, arch_b])
    trainer.sample = lambda rng: next(archs)
    ds = tf.data.Dataset.from_tensors((_images(4, seed=1), np.array([0, 1, 2, 3], np.int32))).repeat()
    variables, moms = trainer.vars, trainer.opt.momentums
    assert len(moms) == len(variables)
    moving = [v for op in _sliced_layers(net) for v in (op.moving_mean, op.moving_variance)]
    snaps = [(_state(variables), _state(moms), _state(moving))]
    trainer.run(ds, steps_per_epoch=1, on_epoch=lambda t, rec: snaps.append((_state(variables), _state(moms),
                                                                             _state(moving))))
    assert [h["epoch"] for h in trainer.history] == [1, 2]

    def path_ids(arch):
        return {id(op) for block, row in zip(net.blocks, arch) for op, _, _ in block.path_ops(row)}
    index = {id(v): i for i, v in enumerate(variables)}
    mindex = {id(v): i for i, v in enumerate(moving)}
    on_a, on_b = path_ids(arch_a), path_ids(arch_b)
    assert not on_a & on_b
    checked = 0
    for block in net.blocks:
        for op in block.ops:
            for step, on in ((1, on_a), (2, on_b)):
                before, after = snaps[step - 1], snaps[step]
                for v in op.trainable_variables:
                    i = index[id(v)]
                    if id(op) in on:
                        assert np.any(after[0][i] != before[0][i]), f"step {step}: sampled {v.path} did not move"
                        assert np.any(after[1][i] != 0)
                    else:
                        np.testing.assert_array_equal(after[0][i], before[0][i], err_msg=f"step {step}: {v.path}")
                        np.testing.assert_array_equal(after[1][i], before[1][i], err_msg=f"step {step}: {v.path}")
                        checked += 1
                if id(op) not in on:  # BN statistics of unsampled choices stay too
                    for v in (op.moving_mean, op.moving_variance):
                        np.testing.assert_array_equal(after[2][mindex[id(v)]], before[2][mindex[id(v)]])
            if id(op) in on_a:  # step 2 left step 1's path alone although its momentum is non-zero
                for v in op.trainable_variables:
                    assert np.any(snaps[1][1][index[id(v)]] != 0)
    assert checked > 0
    for v in net.classifier.trainable_variables:  # shared layers move every step
        assert np.any(snaps[1][0][index[id(v)]] != snaps[0][0][index[id(v)]])
        assert np.any(snaps[2][0][index[id(v)]] != snaps[1][0][index[id(v)]])


# ---------------------------------------------------------------------------------------------------------------------
# 2. Channel slicing and weight sharing


def test_channel_ratios_share_leading_channels(net, fast):
    narrow = np.array([[0, 0, 0], [3, 0, 0], [1, 0, 0]], np.int32)
    wide = narrow.copy()
    wide[:, 1] = 1
    a, b = net.extract(narrow), net.extract(wide)
    assert a.keys() == b.keys()
    smaller = 0
    for k, w in a.items():
        v = b[k]
        assert w.ndim == v.ndim and all(p <= q for p, q in zip(w.shape, v.shape)), k
        np.testing.assert_array_equal(w, v[tuple(slice(0, n) for n in w.shape)], err_msg=k)
        smaller += w.shape != v.shape
    assert smaller > 0
    for arch in (narrow, wide):
        spec = sp.arch_spec(SPACE, arch)
        model = net.derived_model(arch)
        for (i, j, blk), row in zip(spec.blocks(), arch):
            p, mid = f"s{i}_b{j}", blk.mid_channels
            assert mid == SPACE.mid_channels(blk.filters, SPACE.channel_ratios[row[1]])
            if blk.choice == "x":
                assert model.get_layer(f"{p}_pw0_conv").kernel.shape[-1] == mid
                assert model.get_layer(f"{p}_dw1").kernel.shape[2] == mid
                assert model.get_layer(f"{p}_pw1_conv").kernel.shape[-1] == mid
            else:
                assert model.get_layer(f"{p}_pw0_conv").kernel.shape[-1] == mid
                assert model.get_layer(f"{p}_dw").kernel.shape[2] == mid
                assert model.get_layer(f"{p}_pw1_conv").kernel.shape[2] == mid
    assert sp.arch_spec(SPACE, narrow).stages[1][0].mid_channels == 10  # round(0.5 · 40/2)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Fake quantization


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_quantize_weights_levels(k):
    w = tf.constant(np.random.default_rng(k).normal(0, 0.3, (3, 3, 8, 16)), tf.float32)
    q = quantize_weights(w, tf.constant(k)).numpy()
    levels = np.unique(np.round(q, 5))  # exactness: test_fake_quant_forward_is_exactly_on_its_levels
    assert len(levels) <= 2 ** k and q.min() >= -1 and q.max() <= 1
    if k == 1:
        e = np.mean(np.abs(w.numpy()))
        np.testing.assert_allclose(np.abs(q), e, rtol=1e-5)
        np.testing.assert_array_equal(np.sign(q), np.sign(w.numpy()))
    else:
        assert len(levels) > 2 ** (k - 1)  # the levels are actually used
        np.testing.assert_allclose(np.abs(q).max(), 1.0, atol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(w)
        s = tf.reduce_sum(quantize_weights(w, tf.constant(k)))
    assert np.all(np.isfinite(tape.gradient(s, w).numpy()))


@pytest.mark.parametrize("a", [2, 4])
def test_pact_ranges_and_gradients(a):
    alpha = tf.Variable(2.0)
    x = tf.constant(np.concatenate([np.linspace(-4, 4, 401), [2.5, 3.0, -2.5]]).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        u = pact(x, alpha, tf.constant(a), signed=False)
        s = pact(x, alpha, tf.constant(a), signed=True)
        su, ss = tf.reduce_sum(u), tf.reduce_sum(s)
    u, s, xv = u.numpy(), s.numpy(), x.numpy()
    assert u.min() >= 0 and u.max() <= 2.0 + 1e-6 and len(np.unique(np.round(u, 5))) <= 2 ** a
    assert s.min() >= -2.0 - 1e-6 and s.max() <= 2.0 + 1e-6 and len(np.unique(np.round(s, 5))) <= 2 ** a
    np.testing.assert_allclose(u[xv > 2.0], 2.0, rtol=1e-6)
    np.testing.assert_allclose(s[xv < -2.0], -2.0, rtol=1e-6)
    step = 2.0 / (2 ** a - 1)
    assert np.abs(u - np.clip(xv, 0, 2)).max() <= step / 2 + 1e-5
    # PACT: dL/dα = #(x > α) (unsigned); signed also −#(x < −α); straight-through inside the range, 0 outside.
    assert tape.gradient(su, alpha).numpy() == pytest.approx(np.sum(xv > 2.0))
    assert tape.gradient(ss, alpha).numpy() == pytest.approx(np.sum(xv > 2.0) - np.sum(xv < -2.0))
    gu, gs = tape.gradient(su, x).numpy(), tape.gradient(ss, x).numpy()
    inside = (xv > 0.01) & (xv < 1.99)
    np.testing.assert_array_equal(gu[inside], 1.0)
    np.testing.assert_array_equal(gu[(xv < -0.01) | (xv > 2.01)], 0.0)
    np.testing.assert_array_equal(gs[np.abs(xv) < 1.99], 1.0)
    np.testing.assert_array_equal(gs[np.abs(xv) > 2.01], 0.0)


def test_fake_quant_forward_is_exactly_on_its_levels():
    """The forward value of a k-bit fake quantizer takes at most 2^k distinct values — exactly, not up to rounding
    (``x + stop_gradient(q − x)`` is not exactly ``q`` in floating point)."""
    for seed in range(3):
        w = tf.constant(np.random.default_rng(seed).normal(0, 0.3, (3, 3, 8, 16)), tf.float32)
        x = tf.constant(np.random.default_rng(seed).normal(0, 3, 2000), tf.float32)
        for k in (1, 2, 3, 4):
            assert len(np.unique(quantize_weights(w, tf.constant(k)).numpy())) <= 2 ** k, (seed, k)
            for signed in (False, True):
                y = pact(x, tf.constant(1.7), tf.constant(k), signed).numpy()
                assert len(np.unique(y)) <= 2 ** k, (seed, k, signed)


# ---------------------------------------------------------------------------------------------------------------------
# 4. Constraint sampling


def test_constraint_sampling_never_violates():
    lo, hi = sp.cost(QSPACE, sp.smallest(QSPACE)), sp.cost(QSPACE, sp.largest(QSPACE))
    assert lo["macs"] < hi["macs"] and lo["bitops"] < hi["bitops"]
    draws = [sp.cost(QSPACE, a) for a in sp.uniform(QSPACE, np.random.default_rng(0), 300)]
    assert all(lo["macs"] <= d["macs"] <= hi["macs"] and lo["bitops"] <= d["bitops"] <= hi["bitops"] for d in draws)
    median = {k: float(np.median([d[k] for d in draws])) for k in ("macs", "params", "bitops")}

    class Latency:  # any object with predict(spec) -> ms
        def predict(self, spec):
            return count(spec).macs / 1e5
    cases = [(sp.Constraints(max_macs=(lo["macs"] + hi["macs"]) / 2), None),
             (sp.Constraints(max_params=median["params"]), None),
             (sp.Constraints(max_bitops=median["bitops"]), None),
             (sp.Constraints(max_macs=median["macs"] * 1.05, max_params=median["params"] * 1.05,
                             max_bitops=median["bitops"]), None),
             (sp.Constraints(max_latency_ms=median["macs"] / 1e5), Latency())]
    for constraints, latency in cases:
        rng = np.random.default_rng(1)
        seen = set()
        for _ in range(200):
            a = sp.validate_arch(QSPACE, sp.sample(QSPACE, rng, constraints, latency))
            c = sp.cost(QSPACE, a, latency)
            for key, limit in constraints.limits().items():
                assert c[key] <= limit, (constraints, sp.key(a), c)
            seen.add(sp.key(a))
        assert len(seen) > 150, constraints  # uniform among the valid paths, not one path
    with pytest.raises(sp.ConstraintError):
        sp.sample(QSPACE, np.random.default_rng(0), sp.Constraints(max_macs=1), max_tries=50)
    with pytest.raises(sp.ConstraintError):
        sp.sample(QSPACE, np.random.default_rng(0), sp.Constraints(max_bitops=lo["bitops"] - 1), max_tries=50)


# ---------------------------------------------------------------------------------------------------------------------
# 5. Evolution and random search


def fake_accuracy(arch):
    """Deterministic, practically tie-free stand-in for validation top-1."""
    return (zlib.crc32(sp.key(arch).encode()) % 100_003) / 100_003


def _qconstraints():
    lo, hi = sp.cost(QSPACE, sp.smallest(QSPACE)), sp.cost(QSPACE, sp.largest(QSPACE))
    return sp.Constraints(max_macs=(lo["macs"] + hi["macs"]) / 2, max_bitops=(lo["bitops"] + hi["bitops"]) / 3)


def _check_candidates(search, constraints, calls):
    cfg = search.config
    assert len(calls) == len(set(calls)) == len(search.cache)  # each path evaluated once, cached by key
    per_iter = np.bincount([c["iteration"] for c in search.cache.values()], minlength=cfg.iterations)
    assert len(per_iter) == cfg.iterations and per_iter.max() <= cfg.population and per_iter.min() > 0
    for k, c in search.cache.items():
        a = sp.validate_arch(QSPACE, sp.from_key(k))
        assert sp.key(a) == k and constraints.ok(sp.cost(QSPACE, a))
        assert {n: c[n] for n in ("macs", "params", "bitops")} == sp.cost(QSPACE, a)
        assert c["acc"] == fake_accuracy(a)


@pytest.mark.parametrize("kind", ["evolution", "random"])
def test_search_keeps_candidates_valid_and_topk_sorted(kind, tmp_path):
    constraints = _qconstraints()
    cfg = ev.EvolutionConfig(population=8, iterations=4, top_k=3, mutations=4, crossovers=4, seed=0)
    calls = []

    def evaluate(arch):
        assert constraints.ok(sp.cost(QSPACE, arch)), "a violating path was evaluated"
        calls.append(sp.key(arch))
        return fake_accuracy(arch)
    records = []
    search = ev.EvolutionSearch(QSPACE, evaluate, constraints, cfg, str(tmp_path / "state.json"), kind)
    result = search.run(on_iteration=lambda s, r: records.append(r))
    _check_candidates(search, constraints, calls)
    accs = [t["acc"] for t in result["top"]]
    assert len(accs) == cfg.top_k and accs == sorted(accs, reverse=True)
    everything = sorted((c["acc"] for c in search.cache.values()), reverse=True)
    assert accs == everything[: cfg.top_k]  # top-k of everything seen so far
    assert result["best"] == result["top"][0]["arch"] and result["best_acc"] == everything[0]
    assert [h["iteration"] for h in result["history"]] == [1, 2, 3, 4] and records == result["history"]
    best = [h["best_acc"] for h in result["history"]]
    assert best == sorted(best) and result["evaluated"] == len(calls) <= cfg.population * cfg.iterations
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["iteration"] == cfg.iterations and len(state["cache"]) == len(calls)
    if kind == "evolution":  # mutation and crossover on their own: new, distinct, valid paths
        assert all(p == sp.key(sp.validate_arch(QSPACE, sp.from_key(p))) for p in search.top)
        parents = [sp.from_key(t) for t in search.top]
        for make in (search._mutant, search._child):
            taken = set()
            made = search._generate(6, make, taken)
            assert made and len(made) == len(set(made)) == len(taken)
            for k in made:
                a = sp.validate_arch(QSPACE, sp.from_key(k))
                assert k not in search.cache and constraints.ok(sp.cost(QSPACE, a))
                if make == search._child:  # every field comes from one of two parents
                    assert any(np.all((a == p) | (a == q)) for p in parents for q in parents)
        pop = search._next_population()
        assert len(pop) == len(set(pop)) == cfg.population and not set(pop) & set(search.cache)


def test_search_resumes_exactly_and_refuses_another_search(tmp_path):
    constraints = _qconstraints()
    cfg = ev.EvolutionConfig(population=6, iterations=3, top_k=3, mutations=3, crossovers=3, seed=3)
    reference = ev.EvolutionSearch(QSPACE, fake_accuracy, constraints, cfg, str(tmp_path / "ref.json")).run()
    assert reference["evaluated"] > 8

    calls = []

    def dies_after_8(arch):
        if len(calls) == 8:
            raise RuntimeError("killed")
        calls.append(sp.key(arch))
        return fake_accuracy(arch)
    path = str(tmp_path / "state.json")
    with pytest.raises(RuntimeError, match="killed"):
        ev.EvolutionSearch(QSPACE, dies_after_8, constraints, cfg, path).run()
    assert len(json.loads(open(path).read())["cache"]) == 8

    resumed_calls = []

    def evaluate(arch):
        resumed_calls.append(sp.key(arch))
        return fake_accuracy(arch)
    search = ev.EvolutionSearch(QSPACE, evaluate, constraints, cfg, path)
    assert search.iteration == 1 and len(search.cache) == 8
    assert search.run() == reference
    assert not set(calls) & set(resumed_calls) and len(calls) + len(resumed_calls) == reference["evaluated"]
    # a finished search reruns to the same result without evaluating anything
    assert ev.EvolutionSearch(QSPACE, evaluate, constraints, cfg, path).run() == reference
    assert len(calls) + len(resumed_calls) == reference["evaluated"]
    # another search on the same state file is refused
    other = dataclasses.replace(constraints, max_macs=constraints.max_macs * 0.9)
    with pytest.raises(ev.SearchStateError):
        ev.EvolutionSearch(QSPACE, evaluate, other, cfg, path)
    with pytest.raises(ev.SearchStateError):
        ev.EvolutionSearch(QSPACE, evaluate, constraints, cfg, path, kind="random")
    # ... and so is the same search measured another way (other validation images: cached accuracies would mix)
    with pytest.raises(ev.SearchStateError, match="how candidates are evaluated"):
        ev.EvolutionSearch(QSPACE, evaluate, constraints, cfg, path, evaluation={"val_images": 500})
    with open(path, "w") as f:
        f.write("{truncated")
    with pytest.raises(ev.SearchStateError, match="unreadable search state"):
        ev.EvolutionSearch(QSPACE, evaluate, constraints, cfg, path)


@pytest.mark.parametrize("flag,value", [("val_images", 500), ("recal_images", 64), ("eval_batch", 32),
                                        ("population", 12), ("mutation_prob", 0.3), ("max_macs", 5e6)])
def test_evolution_resume_with_other_measurement_is_refused_before_tensorflow(tmp_path, flag, value):
    """A saved evolution state measured or searched with other flags: one line naming them, before TensorFlow and
    the supernet load (evaluation settings, Algorithm 1's settings, the hard limits)."""
    from workflows import search_spos as W
    config = W.SearchSposConfig(dataset="shapes", phase="evolution", out_dir=str(tmp_path))
    state = {"identity": {"evaluation": W.evaluation_identity(config),
                          "config": dataclasses.asdict(W.evolution_config(config)),
                          "constraints": dataclasses.asdict(W.constraints_of(config))}}
    (tmp_path / "evolution_state.json").write_text(json.dumps(state))
    W.check_evolution_state(config)  # same measurement: resumes
    with pytest.raises(W.ConfigError, match=f"--{flag}"):
        W.check_evolution_state(dataclasses.replace(config, **{flag: value}))
    (tmp_path / "evolution_state.json").write_text("{not json")
    with pytest.raises(W.ConfigError, match="unreadable search state"):
        W.check_evolution_state(config)
    (tmp_path / "evolution_state.json").write_text(json.dumps({"identity": {"kind": "evolution"}}))
    with pytest.raises(W.ConfigError, match="from before the measurement settings were recorded"):
        W.check_evolution_state(config)  # an older state: named as such, not as five differing flags


TIES = """
import json, numpy as np
from search import spos as sp, evolution as ev
space = sp.cifar_space(0.25, (1, 1, 1, 1), channel_ratios=(0.5, 1.0))
acc = lambda a: float(int(a[:, 0].sum()) % 3) / 3  # few distinct accuracies, as on a small validation set
cfg = ev.EvolutionConfig(population=8, iterations=4, top_k=3, mutations=4, crossovers=4, seed=0)
r = ev.EvolutionSearch(space, acc, sp.Constraints(), cfg).run()
print(json.dumps([r["top"], r["all"]]))
"""


def test_search_is_reproducible_across_processes_with_tied_accuracies():
    """A resumed search runs in a new process: with tied accuracies the top-k (and so the next population) must not
    depend on the process's string-hash seed."""
    procs = [run_python(TIES, wait=False, PYTHONHASHSEED=seed) for seed in ("1", "2")]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout))
    assert outs[0] == outs[1], "top-k / populations differ between PYTHONHASHSEED=1 and 2"


# ---------------------------------------------------------------------------------------------------------------------
# 6. BN recalibration


@pytest.mark.parametrize("kind", ["conv", "dw"])
def test_sliced_conv_bn_training_mode_matches_keras_batch_normalization(kind):
    """Training mode (the fused batch-norm op, its Bessel-corrected variance turned back into the biased one) against
    a stock conv + ``keras.layers.BatchNormalization(training=True)`` on the same sliced weights: output, input and
    weight gradients, and the moving statistics of the used channels (the unused ones stay as they were)."""
    rng = np.random.default_rng(3)
    op = SlicedConvBN(kind, 3, 6, 6, 1, True, "c", "b", eps=1e-5, momentum=0.9, name=f"bn_{kind}")
    op.gamma.assign(rng.uniform(0.5, 1.5, 6).astype(np.float32))
    op.beta.assign(rng.normal(0, 0.2, 6).astype(np.float32))
    op.moving_mean.assign(rng.normal(0, 0.1, 6).astype(np.float32))
    before_var = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    op.moving_variance.assign(before_var)
    before_mean = op.moving_mean.numpy().copy()
    cin, c = (4, 4) if kind == "dw" else (6, 4)
    x = tf.constant(rng.normal(1.0, 2.0, (3, 5, 5, cin)).astype(np.float32))
    bn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)
    bn.build((None, 5, 5, c))
    bn.set_weights([op.gamma.numpy()[:c], op.beta.numpy()[:c], before_mean[:c], before_var[:c]])
    w = tf.Variable(op.kernel.numpy()[:, :, :cin, :] if kind == "dw" else op.kernel.numpy()[:, :, :cin, :c])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = op(x, cout=tf.constant(c), mode="train")
        conv = (tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME") if kind == "dw" else tf.nn.conv2d(x, w, 1, "SAME"))
        ref = tf.nn.relu(bn(conv, training=True))
        probe = tf.constant(rng.normal(size=(3, 5, 5, c)).astype(np.float32))
        loss, ref_loss = tf.reduce_sum(y * probe), tf.reduce_sum(ref * probe)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), tape.gradient(ref_loss, x).numpy(), rtol=1e-4, atol=1e-5)
    gk = tape.gradient(loss, op.kernel).numpy()
    gk = gk[:, :, :cin, :] if kind == "dw" else gk[:, :, :cin, :c]
    np.testing.assert_allclose(gk, tape.gradient(ref_loss, w).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tape.gradient(loss, op.gamma).numpy()[:c], tape.gradient(ref_loss, bn.gamma).numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(op.moving_mean.numpy()[:c], bn.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(op.moving_variance.numpy()[:c], bn.moving_variance.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(op.moving_mean.numpy()[c:], before_mean[c:])
    np.testing.assert_array_equal(op.moving_variance.numpy()[c:], before_var[c:])


def test_sliced_conv_bn_one_value_per_channel_has_zero_batch_variance():
    """N·H·W = 1: the fused op skips its Bessel correction there; the moving variance must decay towards 0, not NaN."""
    op = SlicedConvBN("conv", 1, 4, 4, 1, False, "c", "b", momentum=0.9, name="bn_one")
    x = np.random.default_rng(0).normal(size=(1, 1, 1, 4)).astype(np.float32)
    op(tf.constant(x), mode="train")
    np.testing.assert_allclose(op.moving_variance.numpy(), np.full(4, 0.9, np.float32), rtol=1e-6)
    np.testing.assert_allclose(op.moving_mean.numpy(), 0.1 * (x.reshape(4) @ op.kernel.numpy()[0, 0]), rtol=1e-5,
                               atol=1e-6)


def test_recalibration_is_the_exact_mean_of_batch_statistics(net, fast):
    arch = np.array([[1, 0, 0], [3, 0, 0], [0, 1, 0]], np.int32)
    recal, val = _images(12, seed=5), _images(8, seed=6)
    evaluator = CandidateEvaluator(net, recal, val, np.arange(8) % SPACE.classes, batch_size=4)
    layers = _sliced_layers(net)
    before = {id(op): (op.moving_mean.numpy().copy(), op.moving_variance.numpy().copy()) for op in layers}
    trainable = _state(net.trainable_variables)
    evaluator.recalibrate(arch)
    assert int(net.recal_count.numpy()) == 3
    # the stem's statistics by hand: mean over the three batches of the batch mean / (biased) variance
    means, variances = [], []
    for i in range(0, 12, 4):
        x = (recal[i:i + 4] - np.array(SPACE.mean)) / np.array(SPACE.std)
        y = tf.nn.conv2d(tf.pad(x.astype(np.float32), [[0, 0], [1, 1], [1, 1], [0, 0]]), net.stem.kernel, 1, "VALID")
        m, v = tf.nn.moments(y, [0, 1, 2])
        means.append(m.numpy())
        variances.append(v.numpy())
    np.testing.assert_allclose(net.stem.moving_mean.numpy(), np.mean(means, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.stem.moving_variance.numpy(), np.mean(variances, 0), rtol=1e-4, atol=1e-5)
    on_path = {id(op): _bn_width(op, cin, cout)
               for b, row in zip(net.blocks, arch) for op, cin, cout in b.path_ops(row)}
    on_path[id(net.head)] = net.head.cout
    partial = 0
    for op in layers[1:]:
        mean, var = op.moving_mean.numpy(), op.moving_variance.numpy()
        if id(op) in on_path:
            c = on_path[id(op)]
            # (a channel's mean can come out exactly 0.0 in float32 when its input is a zero-mean BN output)
            assert np.any(mean[:c] != before[id(op)][0][:c]) and np.all(var[:c] != before[id(op)][1][:c]), op.name
            assert np.all(var[:c] > 0)
            np.testing.assert_array_equal(mean[c:], before[id(op)][0][c:])  # beyond the sampled width: untouched
            partial += c < len(mean)
        else:
            np.testing.assert_array_equal(mean, before[id(op)][0], err_msg=op.name)
            np.testing.assert_array_equal(var, before[id(op)][1], err_msg=op.name)
    assert partial > 0
    for a, b in zip(trainable, _state(net.trainable_variables)):
        np.testing.assert_array_equal(a, b)  # recalibration trains nothing
    first = [(op.moving_mean.numpy().copy(), op.moving_variance.numpy().copy()) for op in layers]
    acc = evaluator.accuracy(arch)
    assert 0.0 <= acc <= 1.0
    assert evaluator(arch) == acc  # recalibrating again on the same data gives the same statistics
    for (m, v), op in zip(first, layers):
        np.testing.assert_allclose(op.moving_mean.numpy(), m, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(op.moving_variance.numpy(), v, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------------
# 7. Derived model


def test_derived_model_matches_the_supernet_path(net, fast):
    """The protocol's ``derived_model(arch)`` computes what the supernet computes on the path ``arch``."""
    assert isinstance(net, Supernet) and all(isinstance(b, SearchBlock) for b in net.blocks)
    rng = np.random.default_rng(7)
    for op in _sliced_layers(net):
        w = op.moving_mean.shape[0]
        op.moving_mean.assign(rng.normal(0, 0.5, w))
        op.moving_variance.assign(rng.uniform(0.5, 2.0, w))
        op.gamma.assign(rng.uniform(0.5, 1.5, w))
        op.beta.assign(rng.normal(0, 0.2, w))
    x = _images(3, seed=8)
    archs = [[[3, 0, 0], [0, 1, 0], [2, 0, 0]],  # choices x/3/7, stride 2/1/2
             [[0, 1, 0], [3, 0, 0], [1, 1, 0]]]  # 3/x/5
    for arch in np.array(archs, np.int32):
        spec = net.derive(arch)
        assert spec == sp.arch_spec(SPACE, arch)  # the TF-free form (costs, evolution) gives the same spec
        assert S.decode(S.encode(spec)) == spec and spec.provenance.method == "spos"
        model = net.derived_model(arch)
        assert not any(isinstance(layer, SlicedConvBN) for layer in model.layers)
        want = net(x, arch, mode="eval").numpy()
        got = model(x, training=False).numpy()
        assert np.abs(got - want).max() < 1e-4, sp.key(arch)
        np.testing.assert_array_equal(net.call_path(x, arch, mode="eval").numpy(), want)  # the fixed-path form
        c = count(spec)
        assert c.params == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert c.macs == sp.cost(SPACE, arch)["macs"]


def test_protocol_derive_extract_round_trip(net, fast):
    arch = np.array([[2, 1, 0], [3, 0, 0], [0, 0, 0]], np.int32)
    prov = S.Provenance(method="spos", seed=3)
    spec = net.derive(arch, name="round_trip", provenance=prov)
    assert spec.name == "round_trip" and spec.provenance == prov and S.decode(S.encode(spec)) == spec
    assert [b for _, _, b in spec.blocks()] == [blk.derive_block(row) for blk, row in zip(net.blocks, arch)]
    weights = net.extract(arch)
    np.testing.assert_equal(weights, net.extract(arch, spec))
    shapes = {f"{layer.name}/{v.name.split('/')[-1]}": tuple(v.shape) for layer in build(spec).layers
              for v in layer.weights}
    assert {k: w.shape for k, w in weights.items()} == shapes
    with pytest.raises(ValueError, match="does not match"):
        net.extract(arch, net.derive(np.zeros_like(arch)))


def test_search_layers_register_under_one_package():
    for cls in (SposSupernet, ChoiceBlock, SlicedConvBN, SinglePathSGD):
        assert keras.saving.get_registered_name(cls) == f"{PACKAGE}>{cls.__name__}"


def test_arch_spec_records_bits():
    arch = sp.uniform(QSPACE, np.random.default_rng(2))
    spec = sp.arch_spec(QSPACE, arch, name="q_test")
    assert S.decode(S.encode(spec)) == spec and S.loads(S.dumps(spec)) == spec
    blocks = [b for _, _, b in spec.blocks()]
    assert [b.bits for b in blocks] == [S.BitsSpec(*QSPACE.bits[q]) for q in arch[:, 2]]
    assert [b.choice for b in blocks] == [QSPACE.choices[c] for c in arch[:, 0]]
    ops, float_macs = bitops(spec)
    assert ops == sum(m * b.bits.w * b.bits.a for m, b in zip(block_macs(spec), blocks))
    assert ops == sp.cost(QSPACE, arch)["bitops"]
    assert float_macs == count(spec).macs - sum(block_macs(spec))
    assert all(b.bits is None for _, _, b in sp.arch_spec(SPACE, np.zeros((3, 3), np.int32)).blocks())


def test_bitops_on_a_hand_checked_spec():
    spec = sp.arch_spec(SPACE, np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], np.int32))
    assert bitops(spec) == (0, count(spec).macs)
    # block s0_b1: stride 1 on 8×8, 16 channels → branch 8 in / 8 out, mid 8, choice_3:
    # 1×1 8→8: 64·64 + dw 3×3 on 8: 64·9·8 + 1×1 8→8: 64·64 = 4096 + 4608 + 4096
    assert block_macs(spec)[1] == 12_800
    stage = (spec.stages[0][0], dataclasses.replace(spec.stages[0][1], bits=S.BitsSpec(2, 4)))
    quantized = dataclasses.replace(spec, stages=(stage, spec.stages[1]))
    assert bitops(quantized) == (12_800 * 2 * 4, count(spec).macs - 12_800)


# ---------------------------------------------------------------------------------------------------------------------
# Graph execution (one trace, on the tiniest space)


@pytest.mark.slow
def test_graph_step_equals_eager_step():
    """``execution="graph"`` (one traced tf.function, blocks on tf.switch_case) makes the eager step's update:
    unsampled variables get zero gradients there and SinglePathSGD must skip them."""
    space = sp.SposSpace(16, 8, 1, (1,), (16,), 32, 4, choices=("3", "x"), channel_ratios=(0.5, 1.0), dropout=0.0)
    m = build_supernet(space, seed=1)
    x, y = tf.constant(_images(2, seed=9)), tf.constant([1, 3])
    arch = tf.constant([[1, 0, 0]], tf.int32)
    variables = m.trainable_variables + [v for op in _sliced_layers(m) for v in (op.moving_mean, op.moving_variance)]
    start = _state(variables)
    results = []
    for execution in ("eager", "graph"):
        for v, s in zip(variables, start):
            v.assign(s)
        trainer = SposTrainer(m, SposConfig(epochs=1, lr=0.5, execution=execution))
        trainer.train_step(x, y, arch)  # both compiled: per-branch functions, and one traced step
        results.append(_state(variables))
    path = {id(op) for op, _, _ in m.blocks[0].path_ops([1, 0, 0])}
    unsampled = {id(v) for op in m.blocks[0].ops if id(op) not in path for v in op.variables}
    for v, s, e, g in zip(variables, start, *results):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=v.path)
        if id(v) in unsampled:
            np.testing.assert_array_equal(g, s, err_msg=v.path)
    assert unsampled


# ---------------------------------------------------------------------------------------------------------------------
# 8. The recipe


@pytest.mark.parametrize("args, needle", [
    (["--bits=9:1"], "--bits"),
    (["--choices=3,9"], "--choices"),
    (["--choices=3,3"], "--choices"),
    (["--max_latency_ms=5"], "--latency_table"),
    # a table of another space (the 224 ImageNet one): none of this space's parts, every latency would be a fallback
    (["--max_latency_ms=5", "--latency_table=benchmarks/results/latency_lut_spos.json"], "holds none of the"),
    (["--phase=evolution"], "no trained supernet"),
    (["--max_macs=1"], "smallest path"),
])
def test_recipe_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    out = tmp_path / "o"
    r = run_module("recipes.search_spos", *args, "--depth=1,1,1,1", f"--out_dir={out}", "--noprogress", timeout=120)
    assert needle in error_line(r, "recipes.search_spos"), r.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing written


@pytest.mark.slow
def test_recipe_end_to_end(recipe_runs):
    out, rc, log = _finish(recipe_runs["e2e"])
    assert rc == 0, log[-3000:]
    spec = S.loads((out / "derived.json").read_text(), "derived.json")
    assert spec.family == "shufflenet" and spec.provenance.method == "spos" and spec.provenance.data == "shapes"
    c = count(spec)
    assert c.macs <= MAX_MACS and dict(spec.provenance.metrics)["macs"] == c.macs
    summary = json.loads((out / "summary.json").read_text())
    space = sp.SposSpace.from_json(summary["space"])
    assert space.stage_blocks == (1, 1, 1, 1) and summary["constraints"] == {"macs": MAX_MACS}
    assert sp.arch_spec(space, sp.from_key(summary["best"]), spec.name, spec.provenance) == spec
    assert set(summary["evolution"]) == {"evolution", "random"}
    better = summary["evolution"]["random"]["best_acc"] > summary["evolution"]["evolution"]["best_acc"]
    assert summary["random_found_better"] is better and ("note: random search found a better path" in log) is better
    # the derived path is the better of the two searches' best (by supernet top-1), recorded which
    assert summary["derived_from"] == ("random" if better else "evolution")
    assert summary["best_acc"] == max(r["best_acc"] for r in summary["evolution"].values())
    for kind in ("evolution", "random"):
        state = json.loads((out / f"{kind}_state.json").read_text())
        assert state["iteration"] == 2 and len(state["cache"]) == summary["evolution"][kind]["evaluated"] <= 8
        assert all(c["macs"] <= MAX_MACS for c in state["cache"].values())
    model = build(spec, weights=str(out / "derived_init.npz"))
    with np.load(out / "derived_init.npz") as npz:
        np.testing.assert_array_equal(model.get_layer("classifier").kernel.numpy(), npz["classifier/kernel"])
    for f in ("evolution.png", "population.png"):
        assert (out / f).read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((out / "supernet" / "history.json").read_text())) == 1


@pytest.mark.slow
def test_recipe_graph_execution_on_two_mirrored_replicas(recipe_runs):
    out, rc, log = _finish(recipe_runs["mirrored"])
    assert rc == 0, log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["supernet"]["strategy"] == "mirrored" and summary["supernet"]["replicas"] == 2
    assert summary["supernet"]["execution"] == "graph" and np.isfinite(summary["supernet"]["last"]["train_ce"])
    assert summary["supernet"]["last"]["step"] == 2
    assert log.count("tracing the supernet's training step") == 1 and "traced in" in log  # a note, not silence
    assert "\r" not in log and "\x1b[" not in log  # a redirected log: no bar redraws or escape codes
    assert sp.SposSpace.from_json(summary["space"]).choices == ("3", "x")


def test_evolution_resume_with_a_recalibrated_latency_table_is_refused(tmp_path):
    """Cached candidates carry latencies predicted with the table's calibration: a state saved with another (or
    none) is refused before TensorFlow, naming --latency_table."""
    from search import latency as lat
    from workflows import search_spos as W
    table = lat.LatencyTable({}, 0.0)
    lut = tmp_path / "lut.json"
    table.save(str(lut))
    config = W.SearchSposConfig(dataset="shapes", phase="evolution", out_dir=str(tmp_path), latency_table=str(lut))
    state = {"identity": {"evaluation": W.evaluation_identity(config),
                          "config": dataclasses.asdict(W.evolution_config(config)),
                          "constraints": dataclasses.asdict(W.constraints_of(config))}}
    (tmp_path / "evolution_state.json").write_text(json.dumps(state))
    W.check_evolution_state(config)
    table.calibration = {"scale": 1.04, "offset_ms": -2.1}
    table.save(str(lut))
    with pytest.raises(W.ConfigError, match=r"--latency_table \(its calibration\)"):
        W.check_evolution_state(config)


@pytest.mark.parametrize("fixed", [{0: 0}, {1: 2}])
def test_evolution_with_fixed_fields_searches_only_the_rest(fixed, tmp_path):
    """The paper's Table 4 rows: block search (channel ratio fixed), channel search (every block choice_3)."""
    from search import evolution as ev
    space = sp.cifar_space(0.25, (1, 1, 2, 1), channel_ratios=(0.6, 1.0, 1.4))
    seen = []

    def evaluate(arch):
        seen.append(arch.copy())
        return float(arch[:, 1].sum() + 0.1 * arch[:, 0].sum())
    cfg = ev.EvolutionConfig(population=8, iterations=3, top_k=3, mutations=3, crossovers=3, seed=1)
    for kind in ("evolution", "random"):
        search = ev.EvolutionSearch(space, evaluate, sp.Constraints(), cfg, str(tmp_path / f"{kind}.json"), kind,
                                    fixed=fixed)
        search.run()
        assert search.identity["fixed"] == {str(f): v for f, v in sorted(fixed.items())}
    for arch in seen:
        for f, v in fixed.items():
            assert (arch[:, f] == v).all()
    free = [f for f in (0, 1) if f not in fixed]
    assert all(len({int(x) for a in seen for x in a[:, f]}) > 1 for f in free)  # the rest is searched
    with pytest.raises(ValueError, match="fixed field 1 = 3"):
        ev.EvolutionSearch(space, evaluate, sp.Constraints(), cfg, kind="random", fixed={1: 3})
    with pytest.raises(ValueError, match="nothing to search"):
        ev.EvolutionSearch(space, evaluate, sp.Constraints(), cfg, kind="random", fixed={0: 1, 1: 0})
    # a saved state of another fixing is another search
    with pytest.raises(ev.SearchStateError, match="different search"):
        ev.EvolutionSearch(space, evaluate, sp.Constraints(), cfg, str(tmp_path / "random.json"), "random",
                           fixed={0: 3} if 0 not in fixed else {1: 1})


def test_recipe_fix_flags_are_checked_before_tensorflow(tmp_path):
    from workflows import search_spos as W
    base = dict(dataset="shapes", depth=(1, 1, 1, 1), channel_ratios=(0.6, 1.0), out_dir=str(tmp_path / "o"))
    assert W.fixed_fields(W.SearchSposConfig(**base, fix_block="5", fix_channel_ratio=1)) == {0: 1, 1: 1}
    for changes, needle in (({"fix_block": "9"}, "--fix_block=9: one of --choices"),
                            ({"fix_channel_ratio": 0.8}, "--fix_channel_ratio=0.8: one of --channel_ratios"),
                            ({"fix_block": "3", "fix_channel_ratio": 1.0}, "leaves nothing to search")):
        with pytest.raises(W.ConfigError, match=needle.replace("(", "\\(")):
            W.validate(W.SearchSposConfig(**base, **changes))
    # a resumed evolution state searched with another fixing is refused before TensorFlow
    config = W.SearchSposConfig(**dict(base, out_dir=str(tmp_path)), phase="evolution", fix_block="3")
    state = {"identity": {"evaluation": W.evaluation_identity(config),
                          "config": dataclasses.asdict(W.evolution_config(config)),
                          "constraints": dataclasses.asdict(W.constraints_of(config)), "fixed": {"0": 0}}}
    (tmp_path / "evolution_state.json").write_text(json.dumps(state))
    W.check_evolution_state(config)
    with pytest.raises(W.ConfigError, match="fix_block"):
        W.check_evolution_state(dataclasses.replace(config, fix_block=None))


def test_fake_quant_at_32_bits_is_float():
    """32 bits (the deployable search's float option, ``--bits=…,32:32``) leaves weights and activations as they
    are: no DoReFa re-parameterisation, no PACT clip; 16-bit activations are fine-grained PACT."""
    w = tf.constant(np.random.default_rng(0).normal(0, 0.3, (3, 3, 8, 16)), tf.float32)
    x = tf.constant(np.linspace(-4, 4, 801).astype(np.float32))
    np.testing.assert_array_equal(quantize_weights(w, tf.constant(32)).numpy(), w.numpy())
    for signed in (False, True):
        np.testing.assert_array_equal(pact(x, tf.constant(1.7), tf.constant(32), signed).numpy(), x.numpy())
        y = pact(x, tf.constant(1.7), tf.constant(16), signed).numpy()
        assert np.abs(y - np.clip(x.numpy(), -1.7 if signed else 0.0, 1.7)).max() <= 3.4 / (2 ** 16 - 1)


def test_fix_path_holds_every_block_and_searches_the_bits(tmp_path):
    """``--fix_path``: one choice and ratio per block held (a list per field), in sampling and in evolution; only
    the bits are searched."""
    from search import evolution as ev
    space = sp.cifar_space(0.25, (1, 1, 2, 1), channel_ratios=(0.6, 1.0, 1.4), bits=((8, 8), (8, 16), (32, 32)))
    path = np.array([[0, 1, 0], [3, 2, 0], [1, 0, 0], [2, 1, 0], [0, 2, 0]], np.int32)
    fixed = {0: path[:, 0].tolist(), 1: path[:, 1].tolist()}
    rng = np.random.default_rng(0)
    limit = sp.Constraints(max_bitops=sp.cost(space, sp.fix(path.copy(), {2: 1}))["bitops"])
    for _ in range(50):
        a = sp.sample(space, rng, limit, fixed=fixed)
        assert (a[:, :2] == path[:, :2]).all() and limit.ok(sp.cost(space, a))
    seen = []

    def evaluate(arch):
        seen.append(arch.copy())
        return float(arch[:, 2].sum())
    cfg = ev.EvolutionConfig(population=6, iterations=2, top_k=2, mutations=2, crossovers=2, seed=0)
    search = ev.EvolutionSearch(space, evaluate, limit, cfg, str(tmp_path / "e.json"), "evolution", fixed=fixed)
    search.run()
    assert search.identity["fixed"] == {"0": fixed[0], "1": fixed[1]}
    assert all((a[:, :2] == path[:, :2]).all() for a in seen) and len({sp.key(a) for a in seen}) > 1
    with pytest.raises(ValueError, match="one per block"):
        ev.EvolutionSearch(space, evaluate, limit, cfg, kind="random", fixed={0: [0, 1]})


def test_recipe_fix_path_is_checked_before_tensorflow(tmp_path):
    from workflows import search_spos as W
    base = dict(dataset="shapes", depth=(1, 1, 1, 1), channel_ratios=(0.6, 1.0), bits=((8, 8), (32, 32)),
                out_dir=str(tmp_path / "o"))
    key = "0.1.0-3.0.0-1.1.0-2.1.0"
    assert W.fixed_fields(W.SearchSposConfig(**base, fix_path=key)) == {0: [0, 3, 1, 2], 1: [1, 0, 1, 1]}
    for changes, needle in (({"fix_path": "0.1.0-3.0.0"}, "4 blocks"),
                            ({"fix_path": "0.2.0-3.0.0-1.1.0-2.1.0"}, "ratio < 2"),
                            ({"fix_path": "x"}, "a path key"),
                            ({"fix_path": key, "fix_block": "3"}, "drop --fix_block"),
                            ({"fix_path": key, "bits": ((8, 8),)}, "at least two"),
                            ({"bits": ((8, 12),)}, "a 1–8, 16 or 32")):
        with pytest.raises(W.ConfigError, match=needle):
            W.validate(W.SearchSposConfig(**{**base, **changes}))
