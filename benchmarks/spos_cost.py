"""SPOS cost: supernet training step vs a standalone network of the largest path, and evolution throughput.

    python -m benchmarks.spos_cost --out benchmarks/results/spos_cost.json [--quick]

Space: ``search.spos.cifar_space(width, depth)`` at 32×32 with the paper's channel ratios (0.2…1.6, so the largest
path runs every block at 1.6× mid width), batch ``--batch_size``. Workers, each in a fresh process (peak memory is
per process), round-robin over ``--rounds``:

- ``standalone``: the largest path built by ``models.builder`` (stock Keras layers), one ``tf.function`` training step
  (forward in training mode, cross-entropy, gradients, Nesterov SGD) — the reference;
- ``fixed_path``: the supernet's ops on the largest path fixed in Python (``SposSupernet.call_path``) in one
  ``tf.function`` with :class:`SinglePathSGD` over every variable — the trainer's step minus the branch selection,
  which splits the overhead into "sliced ops + optimizer over all choices" and "selection";
- ``eager`` / ``graph``: the supernet's training step (``SposTrainer``, the two executions of
  ``search/spos_train.py``) on the same largest path (same arithmetic as the reference, so the ratio is the
  supernet's overhead) and on uniformly sampled paths (reported separately). ``graph`` traces for minutes at full
  depth, so it runs in the first ``--graph_rounds`` rounds only.

Memory: TensorFlow's CPU BFC allocator peak during a step (workers run with ``TF_CPU_ALLOCATOR_USE_BFC=true``; stats
reset before each timed step); it includes the weights of every choice the supernet holds. Throughput: a
``CandidateEvaluator`` (BN recalibration on ``--recal_images`` + top-1 on ``--val_images``, batch 250) over random
paths after every branch has been compiled; candidates per minute = 60 / median seconds per candidate.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from benchmarks import _measure

TARGETS = {"step_time_ratio": {"max": 1.10}, "peak_mem_ratio": {"max": 1.15}, "candidates_per_min": {"min": 5.0}}
WORKER_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}


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
    import numpy as np
    for _ in range(s["warmup"]):
        step()
    out["warmup_s"] = time.perf_counter() - t0
    out["largest_step_s"], out["largest_peak_bytes"] = _timed(tf, lambda: step().numpy(), s["steps"])
    out["params"] = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    return out


def _step_worker(kind, s):
    import keras
    import numpy as np
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    from search import spos as sp
    space = _space(s)
    rng = np.random.default_rng(s["seed"])
    x = tf.constant(rng.uniform(0, 255, (s["batch_size"], 32, 32, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, (s["batch_size"],)).astype(np.int32))
    big = sp.largest(space)
    out = {"kind": kind, "largest_arch": sp.key(big), "largest_macs": sp.cost(space, big)["macs"]}
    t0 = time.perf_counter()
    if kind == "standalone":
        from models.builder import build
        model = build(sp.arch_spec(space, big))
        opt = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
        opt.build(model.trainable_variables)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                ls = loss(y, model(x, training=True))
            g = tape.gradient(ls, model.trainable_variables)
            opt.apply_gradients(zip(g, model.trainable_variables))
            return ls
        return _time_step(tf, step, model, s, out, t0)
    from search.spos_net import build_supernet
    from search.spos_train import SinglePathSGD, SposConfig, SposTrainer
    model = build_supernet(space, seed=s["seed"])
    if kind == "fixed_path":  # the trainer's step minus the branch selection: the largest path traced as such
        variables = model.weight_variables()
        opt = SinglePathSGD(0.01, 0.9, True, 4e-5)
        opt.build(variables)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)

        @tf.function
        def fixed_step():
            with tf.GradientTape() as tape:
                ce = loss(tf.one_hot(y, space.classes), model.call_path(x, big, mode="train"))
            grads = tape.gradient(ce, variables)
            opt.apply_gradients(zip([tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)],
                                    variables))
            return ce
        return _time_step(tf, fixed_step, model, s, out, t0)
    trainer = SposTrainer(model, SposConfig(epochs=1, lr=0.01, sampling="uniform", execution=kind))
    a_big = tf.constant(big)
    archs = [tf.constant(sp.uniform(space, rng)) for _ in range(s["steps"])]
    for c in range(len(space.choices)):  # compile every branch (eager) / trace once (graph)
        a = big.copy()
        a[:, 0] = c
        trainer._train_step(x, y, tf.constant(a))
    for _ in range(s["warmup"]):
        trainer._train_step(x, y, a_big)
    out["warmup_s"] = time.perf_counter() - t0
    out["largest_step_s"], out["largest_peak_bytes"] = _timed(
        tf, lambda: float(trainer._train_step(x, y, a_big)[0]), s["steps"])
    it = iter(archs)
    out["sampled_step_s"], out["sampled_peak_bytes"] = _timed(
        tf, lambda: float(trainer._train_step(x, y, next(it))[0]), s["steps"])
    out["params"] = int(sum(np.prod(v.shape) for v in model.trainable_variables))
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


def _launch(kind, s, tmp):
    out = os.path.join(tmp, f"{kind}_{time.monotonic_ns()}.json")
    r = _measure.run_worker("benchmarks.spos_cost", ["--worker", kind, "--settings", json.dumps(s), "--out", out],
                            env=WORKER_ENV)
    if r.returncode or not os.path.exists(out):
        tail = [l for l in r.stderr.splitlines() if l.strip()][-3:]
        raise RuntimeError(f"worker {kind} failed ({r.returncode}): {' | '.join(tail)}")
    with open(out) as f:
        return json.load(f)


def _med(v):
    return statistics.median(v) if v else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run, not a result")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--depth", default="4,4,8,4")
    p.add_argument("--recal_images", type=int, default=1000)
    p.add_argument("--val_images", type=int, default=1000)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--no_graph", action="store_true", help="skip the (slow to trace) graph execution")
    p.add_argument("--graph_rounds", type=int, default=1, help="rounds that include the graph execution (the first N)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        s = json.loads(a.settings)
        res = _eval_worker(s) if a.worker == "evaluate" else _step_worker(a.worker, s)
        _measure.write_json(a.out, res)
        return 0
    try:
        depth = [int(d) for d in a.depth.split(",")]
    except ValueError:
        print(f"spos_cost: --depth={a.depth}: comma-separated integers", file=sys.stderr)
        return 2
    if min(a.rounds, a.steps, a.batch_size, a.recal_images, a.val_images, a.candidates, *depth) < 1:
        print("spos_cost: counts must be positive", file=sys.stderr)
        return 2
    s = {"width": a.width, "depth": depth, "batch_size": a.batch_size, "steps": a.steps, "warmup": 3, "seed": 0,
         "recal_images": a.recal_images, "val_images": a.val_images, "candidates": a.candidates}
    if a.quick:
        s.update(depth=[1, 1, 1, 1], batch_size=8, steps=2, warmup=1, recal_images=16, val_images=16, candidates=2)
        a.rounds, a.no_graph = 1, True
    t_all = time.time()
    runs = {"standalone": [], "eager": [], "graph": [], "fixed_path": []}
    with tempfile.TemporaryDirectory(prefix="spos-cost-") as tmp:
        for r in range(a.rounds):
            kinds = ["standalone", "eager", "fixed_path"]
            kinds += ["graph"] if r < a.graph_rounds and not a.no_graph else []
            for kind in kinds[r % 2:] + kinds[: r % 2]:
                print(f"round {r + 1}/{a.rounds}: {kind}", file=sys.stderr)
                runs[kind].append(_launch(kind, s, tmp))
        print("evaluation throughput", file=sys.stderr)
        evaluation = _launch("evaluate", s, tmp)

    def per_round(kind, key, ref="standalone"):
        return [_med(x[key]) / _med(y["largest_step_s"]) for x, y in zip(runs[kind], runs[ref])]

    def mem(kind, key="largest_peak_bytes"):
        return [max(x[key]) / max(y["largest_peak_bytes"]) for x, y in zip(runs[kind], runs["standalone"])
                if x.get(key) and y.get("largest_peak_bytes")]
    ratios = {}
    for kind in ("eager", "graph"):
        if runs[kind]:
            ratios[kind] = {"step_time_ratio_largest": per_round(kind, "largest_step_s"),
                            "step_time_ratio_sampled": per_round(kind, "sampled_step_s"),
                            "peak_mem_ratio_largest": mem(kind), "peak_mem_ratio_sampled": mem(kind, "sampled_peak_bytes")}
    if runs["fixed_path"]:
        ratios["fixed_path"] = {"step_time_ratio_largest": per_round("fixed_path", "largest_step_s"),
                                "peak_mem_ratio_largest": mem("fixed_path")}
    med_cand = _med(evaluation["candidate_s"])
    best_kind = "graph" if "graph" in ratios else "eager"
    result = {
        "step_time_ratio": _med(ratios[best_kind]["step_time_ratio_largest"]),
        "step_time_ratio_execution": best_kind,
        "peak_mem_ratio": _med(ratios[best_kind]["peak_mem_ratio_largest"]) if ratios[best_kind]["peak_mem_ratio_largest"] else None,
        "candidates_per_min": 60.0 / med_cand,
        "bn_recal_images": s["recal_images"], "val_images": s["val_images"],
        "ratios": ratios,
        "standalone_step_s": [_med(x["largest_step_s"]) for x in runs["standalone"]],
        "supernet_step_s": {k: {"largest": [_med(x["largest_step_s"]) for x in v],
                                "sampled": [_med(x["sampled_step_s"]) for x in v],
                                "warmup_s": [x["warmup_s"] for x in v]} for k, v in runs.items()
                            if k not in ("standalone", "fixed_path") and v},
        "fixed_path_step_s": [_med(x["largest_step_s"]) for x in runs["fixed_path"]],
        "params": {k: v[0]["params"] for k, v in runs.items() if v},
        "evaluation": {"seconds_per_candidate": evaluation["candidate_s"], "warmup_s": evaluation["warmup_s"],
                       "batch": 250},
        "settings": s, "rounds": a.rounds, "targets": TARGETS, "quick": a.quick,
        "host": _measure.host_info(), "wall_s": time.time() - t_all,
        "command": "python -m benchmarks.spos_cost " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    _measure.write_json(a.out, _measure.round_floats(result))
    print(json.dumps({k: result[k] for k in ("step_time_ratio", "step_time_ratio_execution", "peak_mem_ratio",
                                             "candidates_per_min")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
