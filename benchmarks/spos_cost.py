"""SPOS cost: supernet training step vs a standalone network of the largest path, and evolution throughput.

    python -m benchmarks.spos_cost --out benchmarks/results/spos_cost.json [--quick]

Space: ``search.spos.cifar_space(width, depth)`` at 32×32 with the paper's channel ratios (0.2…1.6, so the largest
path runs every block at 1.6× mid width), batch ``--batch_size``. The steps compared:

- ``standalone``: the largest path built by ``models.builder`` (stock Keras layers), one ``tf.function`` training step
  (forward in training mode, cross-entropy with label smoothing 0.1, gradients, Nesterov SGD with weight decay 4e-5
  on kernels: the supernet step's settings) — the reference;
- ``fixed_path``: the supernet's ops on the largest path fixed in Python (``SposSupernet.call_path``) in one
  ``tf.function`` with :class:`SinglePathSGD` updating the path's variables — the trainer's step minus the branch
  selection (and minus the no-op updates of unsampled choices), which splits the overhead into "sliced ops" and
  "selection";
- ``graph`` / ``eager``: the supernet's training step (``SposTrainer``, the two executions of
  ``search/spos_train.py``) on the same largest path (same arithmetic as the reference, so the ratio is the
  supernet's overhead) and, in the isolated workers, on uniformly sampled paths (reported separately).

Step time (the headline ``step_time_ratio``) is measured **side by side**: each of ``--rounds`` fresh processes
builds standalone, fixed-path and graph steps and runs one step of each in turn (rotating the order) for
``--side_steps`` steps, so all three see the same host conditions; ratio of medians per round, median over rounds.
Timed in separate processes, the reference moved between runs by more than the effect measured (issue 5).
The rotation also times the channel split of the stride-1 blocks alone in both forms (the builder's Reshape/Cropping2D
and the supernet's reshape + unstack, which is cheaper): ``side_by_side.channel_split`` reports both and the graph
ratio had the supernet paid the builder's split, so the share of the headline that comes from the cheaper split is on
record.

Memory: **isolated** workers, one kind per fresh process (``--isolated_rounds``), with TensorFlow's CPU BFC allocator
(``TF_CPU_ALLOCATOR_USE_BFC=true``; stats reset before each timed step) — peak during a step, including the weights
of every choice the supernet holds; their step times alone are reported too. Throughput: a ``CandidateEvaluator``
(BN recalibration on ``--recal_images`` + top-1 on ``--val_images``, batch 250) over random paths after every branch
has been compiled; candidates per minute = 60 / median seconds per candidate.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from benchmarks import harness

TARGETS = {"step_time_ratio": {"max": 1.10}, "peak_mem_ratio": {"max": 1.15}, "candidates_per_min": {"min": 5.0}}
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}
BFC_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}  # isolated workers: the allocator that reports a peak


def _space(s):
    from search import spos as sp
    return sp.cifar_space(s["width"], tuple(s["depth"]), 10, sp.PAPER_RATIOS)


def _peak(tf):
    try:
        return int(tf.config.experimental.get_memory_info("CPU:0")["peak"])
    except ValueError:
        return None


def _timed(tf, fn, steps):
    times, peaks = [], []
    for _ in range(steps):
        try:
            tf.config.experimental.reset_memory_stats("CPU:0")
        except ValueError:
            pass
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        peaks.append(_peak(tf))
    return times, [p for p in peaks if p is not None] or None


def _time_step(tf, step, model, s, out, t0):
    """Warm-up steps, then the timed largest-path steps (seconds, peak bytes) and the parameter count into ``out``."""
    for _ in range(s["warmup"]):
        step()
    out["warmup_s"] = time.perf_counter() - t0
    out["largest_step_s"], out["largest_peak_bytes"] = _timed(tf, lambda: step().numpy(), s["steps"])
    out["params"] = _params(model)
    return out


def _setup(s):
    import numpy as np
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    space = _space(s)
    rng = np.random.default_rng(s["seed"])
    x = tf.constant(rng.uniform(0, 255, (s["batch_size"], 32, 32, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, (s["batch_size"],)).astype(np.int32))
    return space, rng, x, y


def _params(model):
    import numpy as np
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def _standalone_step(space, x, y):
    """The largest path built by ``models.builder`` (stock Keras layers): one ``tf.function`` training step with the
    supernet step's loss and optimizer settings (label smoothing 0.1; Nesterov SGD, weight decay 4e-5 on kernels)."""
    import keras
    import tensorflow as tf

    from models.builder import build
    from search import spos as sp
    model = build(sp.arch_spec(space, sp.largest(space)))
    opt = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True, weight_decay=4e-5)
    opt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    opt.build(model.trainable_variables)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            ls = loss(tf.one_hot(y, space.classes), model(x, training=True))
        g = tape.gradient(ls, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return ls
    return step, model


def _fixed_path_step(model, space, x, y):
    """The trainer's step minus the branch selection: the largest path traced as such (``call_path``)."""
    import keras
    import tensorflow as tf

    from search import spos as sp
    from search.spos_train import SinglePathSGD
    big = sp.largest(space)
    variables = model.weight_variables()
    opt = SinglePathSGD(0.01, 0.9, True, 4e-5)
    opt.build(variables)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            ce = loss(tf.one_hot(y, space.classes), model.call_path(x, big, mode="train"))
        grads = tape.gradient(ce, variables)  # None: off the path, no update op at all
        with opt.path([g is not None for g in grads]):
            opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return ce
    return step


def _trainer(model, space, x, y, execution):
    """A ``SposTrainer`` with every branch compiled (eager) / the step traced (graph)."""
    import tensorflow as tf

    from search import spos as sp
    from search.spos_train import SposConfig, SposTrainer
    trainer = SposTrainer(model, SposConfig(epochs=1, lr=0.01, sampling="uniform", execution=execution))
    for c in range(len(space.choices)):
        a = sp.largest(space)
        a[:, 0] = c
        trainer.train_step(x, y, tf.constant(a))
    return trainer


def _step_worker(kind, s):
    """One kind in a fresh process (BFC allocator): peak memory, and the step time measured alone."""
    import tensorflow as tf

    from search import spos as sp
    space, rng, x, y = _setup(s)
    big = sp.largest(space)
    out = {"kind": kind, "largest_arch": sp.key(big), "largest_macs": sp.cost(space, big)["macs"]}
    t0 = time.perf_counter()
    if kind == "standalone":
        step, model = _standalone_step(space, x, y)
        return _time_step(tf, step, model, s, out, t0)
    from search.spos_net import build_supernet
    model = build_supernet(space, seed=s["seed"])
    if kind == "fixed_path":
        return _time_step(tf, _fixed_path_step(model, space, x, y), model, s, out, t0)
    trainer = _trainer(model, space, x, y, kind)
    a_big = tf.constant(big)
    archs = [tf.constant(sp.uniform(space, rng)) for _ in range(s["steps"])]
    _time_step(tf, lambda: trainer.train_step(x, y, a_big)[0], model, s, out, t0)
    it = iter(archs)
    out["sampled_step_s"], out["sampled_peak_bytes"] = _timed(
        tf, lambda: float(trainer.train_step(x, y, next(it))[0]), s["steps"])
    return out


SIDE_BY_SIDE = ("standalone", "fixed_path", "graph")
SPLITS = ("split_builder", "split_supernet")


def _split_steps(standalone_model, batch):
    """The channel split of every stride-1 block on the largest path, forward and backward, in the two forms: the
    builder's stock layers (Reshape → two Cropping2D → two Reshape: the standalone's) and the supernet's
    (``split_even_odd``: reshape + unstack). Same inputs and the same trivial consumer (Σ even·a + Σ odd·b), so the
    difference of the two is what the supernet's split saves against the standalone's."""
    import numpy as np
    import tensorflow as tf

    from search.spos_net import split_even_odd
    rng = np.random.default_rng(1)
    names = [l.name[: -len("_pairs")] for l in standalone_model.layers if l.name.endswith("_pairs")]
    xs, ws = [], []
    for p in names:
        shape = (batch, *standalone_model.get_layer(f"{p}_pairs").input.shape[1:])
        half = (*shape[:3], shape[3] // 2)
        xs.append(tf.constant(rng.normal(size=shape).astype(np.float32)))
        ws.append([tf.constant(rng.normal(size=half).astype(np.float32)) for _ in range(2)])

    def builder(x, p):
        pairs = standalone_model.get_layer(f"{p}_pairs")(x)
        return (standalone_model.get_layer(f"{p}_even")(standalone_model.get_layer(f"{p}_even_crop")(pairs)),
                standalone_model.get_layer(f"{p}_odd")(standalone_model.get_layer(f"{p}_odd_crop")(pairs)))

    def make(split):
        @tf.function
        def step():
            if not xs:  # no stride-1 block (e.g. --quick): nothing to split
                return tf.constant(0.0)
            with tf.GradientTape() as tape:
                tape.watch(xs)
                loss = tf.add_n([tf.reduce_sum(e * w[0]) + tf.reduce_sum(o * w[1])
                                 for x, w, p in zip(xs, ws, names) for e, o in [split(x, p)]])
            return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, xs)])
        return step
    return {"split_builder": make(builder), "split_supernet": make(lambda x, p: split_even_odd(x))}, len(names)


def _side_by_side_worker(s):
    """Standalone, fixed-path and graph steps in one process, one step of each in turn (rotating the order), so all
    three see the same host conditions; the default allocator. Seconds per step per kind."""
    import tensorflow as tf

    from search import spos as sp
    from search.spos_net import build_supernet
    space, _, x, y = _setup(s)
    t0 = time.perf_counter()
    standalone, standalone_model = _standalone_step(space, x, y)
    model = build_supernet(space, seed=s["seed"])
    fixed = _fixed_path_step(model, space, x, y)
    trainer = _trainer(model, space, x, y, "graph")
    a_big = tf.constant(sp.largest(space))
    splits, n_splits = _split_steps(standalone_model, s["batch_size"])
    steps = {"standalone": lambda: standalone().numpy(), "fixed_path": lambda: fixed().numpy(),
             "graph": lambda: trainer.train_step(x, y, a_big)[0].numpy(),
             **{k: (lambda f=f: f().numpy()) for k, f in splits.items()}}
    for _ in range(s["warmup"]):
        for fn in steps.values():
            fn()
    out = {"kind": "side_by_side", "warmup_s": time.perf_counter() - t0, "step_s": {k: [] for k in steps},
           "split_blocks": n_splits}
    kinds = SIDE_BY_SIDE + SPLITS
    for i in range(s["steps"]):
        order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]
        for k in order:
            t = time.perf_counter()
            steps[k]()
            out["step_s"][k].append(time.perf_counter() - t)
    return out


def _eval_worker(s):
    import numpy as np
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    from search import spos as sp
    from search.spos_net import build_supernet
    from search.spos_train import CandidateEvaluator
    space = _space(s)
    rng = np.random.default_rng(s["seed"])
    model = build_supernet(space, seed=s["seed"])
    xr = rng.uniform(0, 255, (s["recal_images"], 32, 32, 3)).astype(np.float32)
    xv = rng.uniform(0, 255, (s["val_images"], 32, 32, 3)).astype(np.float32)
    yv = rng.integers(0, 10, s["val_images"])
    ev = CandidateEvaluator(model, xr, xv, yv, batch_size=250)
    t0 = time.perf_counter()
    for c in range(len(space.choices)):
        a = sp.largest(space)
        a[:, 0] = c
        ev(a)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(s["candidates"]):
        a = sp.uniform(space, rng)
        t0 = time.perf_counter()
        ev(a)
        times.append(time.perf_counter() - t0)
    return {"kind": "evaluate", "warmup_s": warm, "candidate_s": times}


def _launch(kind, s, tmp, env):
    out = os.path.join(tmp, f"{kind}_{time.monotonic_ns()}.json")
    r = harness.run_worker("benchmarks.spos_cost", ["--worker", kind, "--settings", json.dumps(s), "--out", out],
                            env=env)
    if r.returncode or not os.path.exists(out):
        tail = [l for l in r.stderr.splitlines() if l.strip()][-3:]
        raise RuntimeError(f"worker {kind} failed ({r.returncode}): {' | '.join(tail)}")
    with open(out) as f:
        return json.load(f)


def _med(v):
    return statistics.median(v) if v else None


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run, not a result")
    p.add_argument("--rounds", type=int, default=3, help="side-by-side timing rounds (a fresh process each)")
    p.add_argument("--side_steps", type=int, default=20, help="timed steps per kind in each side-by-side round")
    p.add_argument("--isolated_rounds", type=int, default=1,
                   help="rounds of the one-kind-per-process workers (peak memory, eager, steps timed alone)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per isolated worker")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--depth", default="4,4,8,4")
    p.add_argument("--recal_images", type=int, default=1000)
    p.add_argument("--val_images", type=int, default=1000)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--no_graph", action="store_true", help="skip the isolated graph worker (slow to trace)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        s = json.loads(a.settings)
        if a.worker == "evaluate":
            res = _eval_worker(s)
        elif a.worker == "side_by_side":
            res = _side_by_side_worker(s)
        else:
            res = _step_worker(a.worker, s)
        harness.write_json(a.out, res)
        return 0
    try:
        depth = [int(d) for d in a.depth.split(",")]
    except ValueError:
        print(f"spos_cost: --depth={a.depth}: comma-separated integers", file=sys.stderr)
        return 2
    counts = (a.rounds, a.side_steps, a.steps, a.batch_size, a.recal_images, a.val_images, a.candidates, *depth)
    if min(counts) < 1 or a.isolated_rounds < 0:
        print("spos_cost: counts must be positive (--isolated_rounds may be 0)", file=sys.stderr)
        return 2
    s = {"width": a.width, "depth": depth, "batch_size": a.batch_size, "steps": a.steps, "warmup": 3, "seed": 0,
         "recal_images": a.recal_images, "val_images": a.val_images, "candidates": a.candidates}
    if a.quick:
        s.update(depth=[1, 1, 1, 1], batch_size=8, steps=2, warmup=1, recal_images=16, val_images=16, candidates=2)
        a.rounds, a.side_steps, a.isolated_rounds, a.no_graph = 1, 2, 1, True
    t_all = time.time()
    side, runs = [], {"standalone": [], "eager": [], "graph": [], "fixed_path": []}
    with tempfile.TemporaryDirectory(prefix="spos-cost-") as tmp:
        for r in range(a.rounds):
            print(f"side by side {r + 1}/{a.rounds}", file=sys.stderr)
            side.append(_launch("side_by_side", {**s, "steps": a.side_steps}, tmp, ENV))
        for r in range(a.isolated_rounds):
            kinds = ["standalone", "eager", "fixed_path"] + ([] if a.no_graph else ["graph"])
            for kind in kinds[r % 2:] + kinds[: r % 2]:
                print(f"isolated {r + 1}/{a.isolated_rounds}: {kind}", file=sys.stderr)
                runs[kind].append(_launch(kind, s, tmp, {**ENV, **BFC_ENV}))
        print("evaluation throughput", file=sys.stderr)
        evaluation = _launch("evaluate", s, tmp, ENV)

    def side_ratio(kind):
        return [_med(x["step_s"][kind]) / _med(x["step_s"]["standalone"]) for x in side]

    def same_split_ratio():  # the graph step had it paid the standalone's (builder's) split instead of its own
        return [(_med(x["step_s"]["graph"]) - _med(x["step_s"]["split_supernet"]) + _med(x["step_s"]["split_builder"]))
                / _med(x["step_s"]["standalone"]) for x in side]

    def per_round(kind, key, ref="standalone"):
        return [_med(x[key]) / _med(y["largest_step_s"]) for x, y in zip(runs[kind], runs[ref])]

    def mem(kind, key="largest_peak_bytes"):
        return [max(x[key]) / max(y["largest_peak_bytes"]) for x, y in zip(runs[kind], runs["standalone"])
                if x.get(key) and y.get("largest_peak_bytes")]
    isolated = {}
    for kind in ("eager", "graph"):
        if runs[kind]:
            isolated[kind] = {"step_time_ratio_largest": per_round(kind, "largest_step_s"),
                              "step_time_ratio_sampled": per_round(kind, "sampled_step_s"),
                              "peak_mem_ratio_largest": mem(kind),
                              "peak_mem_ratio_sampled": mem(kind, "sampled_peak_bytes")}
    if runs["fixed_path"]:
        isolated["fixed_path"] = {"step_time_ratio_largest": per_round("fixed_path", "largest_step_s"),
                                  "peak_mem_ratio_largest": mem("fixed_path")}
    mem_kind = "graph" if "graph" in isolated else "eager"
    mem_ratios = isolated.get(mem_kind, {}).get("peak_mem_ratio_largest")
    med_cand = _med(evaluation["candidate_s"])
    result = {
        "step_time_ratio": _med(side_ratio("graph")),
        "step_time_ratio_execution": "graph",
        "peak_mem_ratio": _med(mem_ratios),
        "peak_mem_ratio_execution": mem_kind if mem_ratios else None,
        "candidates_per_min": 60.0 / med_cand,
        "bn_recal_images": s["recal_images"], "val_images": s["val_images"],
        "side_by_side": {
            "step_time_ratio": {k: side_ratio(k) for k in ("graph", "fixed_path")},
            "step_s": {k: [_med(x["step_s"][k]) for x in side] for k in SIDE_BY_SIDE},
            "step_s_quartiles": {k: [[harness.quantile(x["step_s"][k], q) for q in (0.25, 0.75)] for x in side]
                                 for k in SIDE_BY_SIDE},
            "warmup_s": [x["warmup_s"] for x in side], "steps": a.side_steps, "rounds": a.rounds,
            "channel_split": {
                "about": "fwd+bwd of the channel split of every stride-1 block on the largest path, timed in the same "
                         "rotation: the builder's stock layers (standalone) vs the supernet's reshape+unstack; "
                         "step_time_ratio_same_split = (graph - split_supernet + split_builder) / standalone, an "
                         "estimate of the ratio had both used the same split",
                "blocks": side[0]["split_blocks"],
                "split_s": {k: [_med(x["step_s"][k]) for x in side] for k in SPLITS},
                "step_time_ratio_same_split": same_split_ratio()}},
        "isolated": {
            "ratios": isolated,
            "standalone_step_s": [_med(x["largest_step_s"]) for x in runs["standalone"]],
            "supernet_step_s": {k: {"largest": [_med(x["largest_step_s"]) for x in v],
                                    "sampled": [_med(x["sampled_step_s"]) for x in v],
                                    "warmup_s": [x["warmup_s"] for x in v]} for k, v in runs.items()
                                if k not in ("standalone", "fixed_path") and v},
            "fixed_path_step_s": [_med(x["largest_step_s"]) for x in runs["fixed_path"]],
            "rounds": a.isolated_rounds, "steps": s["steps"]},
        "params": {k: v[0]["params"] for k, v in runs.items() if v},
        "evaluation": {"seconds_per_candidate": evaluation["candidate_s"], "warmup_s": evaluation["warmup_s"],
                       "batch": 250},
        "settings": s, "targets": TARGETS, "quick": a.quick,
        "host": harness.host_info(), "wall_s": time.time() - t_all,
        "command": "python -m benchmarks.spos_cost " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    harness.write_json(a.out, harness.round_floats(result))
    print(json.dumps({k: result[k] for k in ("step_time_ratio", "step_time_ratio_execution", "peak_mem_ratio",
                                             "candidates_per_min")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
