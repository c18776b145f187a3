"""Training-step time and peak memory: fixed k_max net vs meta-kernel supernet vs DARTS-style multi-path supernet.

For each number of candidate kernel sizes N (candidates = the first N odd sizes from 3: N=3 → {3,5,7},
N=4 → {3,5,7,9}, N=6 → {3,…,13}) and each depthwise form of :func:`search.supernet.build_supernet` —

- ``fixed``: a plain ``k_max×k_max`` DepthwiseConv2D per layer (no search; the cost reference),
- ``meta``: the meta-kernel layer (one ``k_max`` depthwise conv of the masked, probability-weighted meta kernel),
- ``multi``: N depthwise convs per layer and the probability-weighted sum of their outputs (DARTS),

— one *training step* is: forward pass with BatchNormalization in training mode (Gumbel-softmax sampling of α for
the searchable forms), sparse softmax cross-entropy, gradients of every trainable variable, SGD-momentum update of the
weights and (meta/multi) Adam update of α, all in one ``tf.function`` (``jit_compile=False``) on a fixed random batch.

Every (N, mode) configuration runs in its own fresh worker process (``--worker``), so peak memory is not shared
between configurations. Workers run round-robin over ``--rounds`` rounds (the order rotates every round) and each
times ``--steps`` steps after ``--warmup`` untimed ones. Memory is measured two ways in every worker:

- **allocator peak** (primary): workers run with ``TF_CPU_ALLOCATOR_USE_BFC=true``, which makes TensorFlow's CPU
  allocator a BFC allocator with statistics, so ``tf.config.experimental.get_memory_info("CPU:0")`` works on CPU
  (without it: ``ValueError: Allocator stats not available for device 'CPU:0'``). Stats are reset before each timed
  step; the recorded value is the peak bytes in use during the step (weights, optimizer slots, batch, activations,
  gradients, temporaries). ``step_transient`` is that peak minus the bytes in use right before the step.
- **RSS growth** (secondary, allocator-agnostic): ``VmHWM`` of ``/proc/self/status``, reset via
  ``/proc/self/clear_refs`` right before the first training step (after model build, optimizer build, batch creation
  and tracing), read after the timed steps, minus ``VmRSS`` at that point. ``ru_maxrss`` minus the same baseline is
  recorded too (it cannot be reset, so it also covers tracing).

``python -m benchmarks.supernet_cost --out benchmarks/results/supernet_cost.json`` writes the JSON and a bar chart.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from benchmarks import harness  # noqa: E402
from recipes.cli import UsageError, run  # noqa: E402

MODES = ("fixed", "meta", "multi")
COMMAND = "python -m benchmarks.supernet_cost --out benchmarks/results/supernet_cost.json"
TARGETS = {
    "meta_over_fixed_time": {"3": {"max": 1.10}, "6": {"max": 1.15}},
    "meta_over_fixed_mem": {"3": {"max": 1.05}, "4": {"max": 1.05}, "6": {"max": 1.05}},
    "multi_over_meta_time": {"3": {"min": 2.0}, "6": {"min": 3.0}},
    "multi_over_meta_mem": {"3": {"min": 1.5}, "6": {"min": 2.5}},
}
QUICK = dict(width=0.25, rounds=1, steps=2, warmup=3, ns="3", batch_size=8, op_costs=False)

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output JSON path (a PNG chart is written beside it unless --plot says otherwise).")
flags.DEFINE_string("plot", None, "Bar-chart PNG path (default: --out with .png; empty string: no chart).")
flags.DEFINE_integer("rounds", 5, "Round-robin rounds; every round runs each configuration in a fresh process.")
flags.DEFINE_integer("steps", 10, "Timed training steps per worker.")
flags.DEFINE_integer("warmup", 3, "Untimed training steps per worker before timing (after tracing).")
flags.DEFINE_integer("batch_size", 32, "Batch size of the fixed random batch.")
flags.DEFINE_integer("input_size", 32, "Input resolution of cifar_space.")
flags.DEFINE_float("width", 1.0, "Width multiplier of cifar_space.")
flags.DEFINE_integer("depth", 1, "Depth multiplier of cifar_space.")
flags.DEFINE_string("ns", "3,4,6", "Comma-separated numbers of candidate kernel sizes (first N odd sizes from 3).")
flags.DEFINE_integer("threads", 1, "TensorFlow intra-op and inter-op threads per worker (0: TensorFlow's default, "
                     "one per core). 1 keeps timings meaningful on a small host shared with other processes.")
flags.DEFINE_integer("seed", 0, "Seed of weights, α, Gumbel noise and the random batch.")
flags.DEFINE_boolean("op_costs", True, "Also time depthwise conv forward+backward per kernel size over the net's "
                     "layer shapes (one extra worker) to explain the ratios.")
flags.DEFINE_boolean("quick", False, f"Tiny settings for tests: {QUICK}.")
flags.DEFINE_float("worker_timeout", 900.0, "Seconds before a worker process is considered hung.")
# Internal: the parent runs ``--worker=MODE --worker_n=N`` (or ``--worker=ops``) in a fresh process.
flags.DEFINE_string("worker", None, "Internal: run one configuration (fixed|meta|multi|ops) and write its JSON.")
flags.DEFINE_integer("worker_n", 3, "Internal: N of the worker configuration.")


def candidates_for(n: int) -> tuple[int, ...]:
    return tuple(3 + 2 * i for i in range(n))


def _settings() -> dict:
    s = dict(rounds=FLAGS.rounds, steps=FLAGS.steps, warmup=FLAGS.warmup, batch_size=FLAGS.batch_size,
             input_size=FLAGS.input_size, width=FLAGS.width, depth=FLAGS.depth, ns=FLAGS.ns, seed=FLAGS.seed,
             op_costs=FLAGS.op_costs, threads=FLAGS.threads)
    if FLAGS.quick:  # quick overrides the defaults, never a flag the user gave explicitly
        for k, v in QUICK.items():
            if not FLAGS[k].present:
                s[k] = v
    return s


def _check(s: dict) -> dict:
    if not FLAGS.out:
        raise UsageError("--out: an output JSON path is required")
    for name, lo in (("rounds", 1), ("steps", 1), ("warmup", 0), ("batch_size", 1), ("depth", 1), ("threads", 0)):
        if s[name] < lo:
            raise UsageError(f"--{name}: must be ≥ {lo}, got {s[name]}")
    if s["input_size"] < 8:
        raise UsageError(f"--input_size: must be ≥ 8, got {s['input_size']}")
    if not 0.0 < s["width"] <= 8.0:
        raise UsageError(f"--width: must be in (0, 8], got {s['width']:g}")
    try:
        ns = [int(t) for t in s["ns"].split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--ns: comma-separated integers expected, got {s['ns']!r}") from None
    if not ns or any(n < 1 or n > 8 for n in ns) or len(set(ns)) != len(ns):
        raise UsageError(f"--ns: distinct integers in 1..8 expected, got {s['ns']!r}")
    s["ns"] = sorted(ns)
    if FLAGS.worker_timeout <= 0:
        raise UsageError(f"--worker_timeout: must be > 0, got {FLAGS.worker_timeout:g}")
    return s


# ---------------------------------------------------------------------------------------------------------- the worker
def _train_step_worker(mode: str, n: int, s: dict) -> dict:
    tf = harness.import_tf(s["threads"])
    import keras
    import numpy as np

    from search.metakernel_space import cifar_space
    from search.supernet import arch_variables, build_supernet, weight_variables

    keras.utils.set_random_seed(s["seed"])
    space = cifar_space(width=s["width"], depth=s["depth"], candidates=candidates_for(n), input_size=s["input_size"])
    model = build_supernet(space, mode, seed=s["seed"])
    wvars, avars = weight_variables(model), arch_variables(model)
    w_opt = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    w_opt.build(wvars)
    a_opt = None
    if avars:
        a_opt = keras.optimizers.Adam(learning_rate=3e-4)
        a_opt.build(avars)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(s["seed"])
    b, size = s["batch_size"], s["input_size"]
    x = tf.constant(rng.uniform(0.0, 255.0, (b, size, size, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, space.classes, (b,)).astype(np.int32))
    nw = len(wvars)

    @tf.function(jit_compile=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, wvars + avars)
        w_opt.apply(grads[:nw], wvars)
        if a_opt is not None:
            a_opt.apply(grads[nw:], avars)
        return loss

    count = lambda vs: int(sum(int(np.prod(v.shape)) for v in vs))  # noqa: E731
    return {"mode": mode, "n": n, "candidates": list(candidates_for(n)), "weight_params": count(wvars),
            "arch_params": count(avars), **harness.time_train_step(tf, step, (x, y), s["warmup"], s["steps"])}


def _op_cost_worker(s: dict) -> dict:
    """Forward+backward time of one depthwise conv per kernel size, summed over the searchable layers' shapes, and
    of the layers' 1×1 convs (expansion + projection) for scale. Medians of ``max(steps, 5)`` repeats."""
    tf = harness.import_tf(s["threads"])
    import keras
    import numpy as np

    from search.metakernel_space import cifar_space

    n_max = max(s["ns"])
    space = cifar_space(width=s["width"], depth=s["depth"], candidates=candidates_for(n_max),
                        input_size=s["input_size"])
    keras.utils.set_random_seed(s["seed"])
    rng = np.random.default_rng(s["seed"])
    b, reps = s["batch_size"], max(s["steps"], 5)

    def timed(fn, *args):
        for _ in range(2):
            fn(*args)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            [t.numpy() for t in fn(*args)]
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    @tf.function(jit_compile=False, reduce_retracing=False)
    def dw_fb(x, k, strides):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = tf.nn.depthwise_conv2d(x, k, strides=strides, padding="SAME")
        return tape.gradient(y, [x, k], output_gradients=tf.ones_like(y))

    @tf.function(jit_compile=False, reduce_retracing=False)
    def pw_fb(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = tf.nn.conv2d(x, w, strides=1, padding="SAME")
        return tape.gradient(y, [x, w], output_gradients=tf.ones_like(y))

    dw = {k: 0.0 for k in space.candidates}
    pw = 0.0
    layers = []
    for slot in space.blocks():
        mid = slot.expand or slot.in_ch
        x = tf.constant(rng.standard_normal((b, slot.n_in, slot.n_in, mid)).astype(np.float32))
        strides = [1, slot.stride, slot.stride, 1]
        row = {"block": slot.name, "shape": [b, slot.n_in, slot.n_in, mid], "stride": slot.stride, "dw_ms": {}}
        for k in space.candidates:
            kern = tf.constant(rng.standard_normal((k, k, mid, 1)).astype(np.float32))
            t = timed(dw_fb, x, kern, strides)
            dw[k] += t
            row["dw_ms"][str(k)] = 1e3 * t
        n_out = -(-slot.n_in // slot.stride)
        t = 0.0
        if slot.expand:
            xin = tf.constant(rng.standard_normal((b, slot.n_in, slot.n_in, slot.in_ch)).astype(np.float32))
            t += timed(pw_fb, xin, tf.constant(rng.standard_normal((1, 1, slot.in_ch, mid)).astype(np.float32)))
        xm = tf.constant(rng.standard_normal((b, n_out, n_out, mid)).astype(np.float32))
        t += timed(pw_fb, xm, tf.constant(rng.standard_normal((1, 1, mid, slot.filters)).astype(np.float32)))
        pw += t
        row["pointwise_ms"] = 1e3 * t
        layers.append(row)
    return {"depthwise_fwd_bwd_ms_sum_over_blocks": {str(k): 1e3 * v for k, v in dw.items()},
            "pointwise_fwd_bwd_ms_sum_over_blocks": 1e3 * pw, "per_block": layers}


def _worker_main(s: dict) -> None:
    if FLAGS.worker == "ops":
        result = _op_cost_worker(s)
    elif FLAGS.worker in MODES:
        result = _train_step_worker(FLAGS.worker, FLAGS.worker_n, s)
    else:
        raise UsageError(f"--worker: one of {MODES + ('ops',)}, got {FLAGS.worker!r}")
    harness.write_json(FLAGS.out, result)


# ---------------------------------------------------------------------------------------------------------- the parent
def _worker_args(s: dict, worker: str, n: int, out: str) -> list[str]:
    return [f"--worker={worker}", f"--worker_n={n}", f"--out={out}", f"--steps={s['steps']}",
            f"--warmup={s['warmup']}", f"--batch_size={s['batch_size']}", f"--input_size={s['input_size']}",
            f"--width={s['width']!r}", f"--depth={s['depth']}", f"--seed={s['seed']}",
            f"--ns={','.join(map(str, s['ns']))}", f"--threads={s['threads']}", "--rounds=1"]


def _launch(s: dict, worker: str, n: int, tmpdir: str) -> dict:
    out = os.path.join(tmpdir, f"{worker}_{n}_{time.monotonic_ns()}.json")
    return harness.launch_worker("benchmarks.supernet_cost", _worker_args(s, worker, n, out), out,
                                 timeout=FLAGS.worker_timeout)


def _ratio(a, b):
    return a / b if a is not None and b else None


def _summarize(s: dict, runs: dict) -> dict:
    """``runs[(n, mode)]``: the worker results of every round, in round order."""
    out = {}
    for n in s["ns"]:
        modes = {}
        for mode in MODES:
            rs = runs[(n, mode)]
            modes[mode] = {**harness.summarize_steps(rs), "weight_params": rs[0]["weight_params"],
                           "arch_params": rs[0]["arch_params"]}
        f, m, d = (modes[k] for k in MODES)

        def paired(num, den, key="step_s"):  # ratio of the two configurations' medians within each round
            return harness.paired_ratio(runs[(n, num)], runs[(n, den)], key)

        primary_mem = "alloc_peak_mib" if all(x["alloc_peak_mib"] for x in (f, m, d)) else "rss_hwm_growth_mib"
        out[str(n)] = {
            "candidates": list(candidates_for(n)),
            "meta_over_fixed_time": _ratio(m["step_ms"], f["step_ms"]),
            "meta_over_fixed_mem": _ratio(m[primary_mem], f[primary_mem]),
            "multi_over_meta_time": _ratio(d["step_ms"], m["step_ms"]),
            "multi_over_meta_mem": _ratio(d[primary_mem], m[primary_mem]),
            "memory_measure": primary_mem,
            "meta_over_fixed_time_per_round": paired("meta", "fixed"),
            "multi_over_meta_time_per_round": paired("multi", "meta"),
            "meta_over_fixed_mem_per_round": paired("meta", "fixed", "alloc_peak_bytes"),
            "multi_over_meta_mem_per_round": paired("multi", "meta", "alloc_peak_bytes"),
            "cpu_time_ratios": {"meta_over_fixed": _ratio(m["step_cpu_ms"], f["step_cpu_ms"]),
                                "multi_over_meta": _ratio(d["step_cpu_ms"], m["step_cpu_ms"])},
            "other_memory_ratios": {
                key: {"meta_over_fixed": _ratio(m[key], f[key]), "multi_over_meta": _ratio(d[key], m[key])}
                for key in ("alloc_peak_mib", "alloc_step_transient_mib", "rss_hwm_growth_mib",
                            "ru_maxrss_growth_mib")},
            "modes": modes,
        }
    return out


def _analysis(results: dict, op_costs: dict) -> None:
    """Adds, per N, what the isolated depthwise costs predict: the share of the meta step spent in its k_max depthwise
    convs, multi's predicted step (meta's plus the smaller candidates' depthwise convs; the weighted sum's
    multiplies/adds not counted) and the ceiling of multi/meta if depthwise convs were the whole step."""
    dw = {int(k): v for k, v in op_costs["depthwise_fwd_bwd_ms_sum_over_blocks"].items()}
    for n, r in results.items():
        cands = r["candidates"]
        k_max = cands[-1]
        meta = r["modes"]["meta"]["step_ms"]
        extra = sum(dw[k] for k in cands[:-1])
        r["op_cost_analysis"] = {
            "depthwise_fwd_bwd_ms_per_kernel": {str(k): dw[k] for k in cands},
            "depthwise_kmax_fwd_bwd_ms": dw[k_max],
            "depthwise_all_candidates_fwd_bwd_ms": dw[k_max] + extra,
            "pointwise_fwd_bwd_ms": op_costs["pointwise_fwd_bwd_ms_sum_over_blocks"],
            "meta_step_share_in_kmax_depthwise": dw[k_max] / meta,
            "multi_over_meta_time_predicted": (meta + extra) / meta,
            "multi_over_meta_time_ceiling_if_only_depthwise": (dw[k_max] + extra) / dw[k_max],
            "multi_over_meta_time_ceiling_by_kernel_area": sum(k * k for k in cands) / k_max ** 2,
        }


def _check_targets(results: dict) -> dict:
    verdict = {}
    for key, per_n in TARGETS.items():
        for n, bound in per_n.items():
            if n not in results:
                continue
            v = results[n][key]
            ok = v is not None and (v <= bound["max"] if "max" in bound else v >= bound["min"])
            verdict[f"{key}@N={n}"] = {"value": v, **bound, "met": bool(ok)}
    return verdict


def _method(s: dict) -> str:
    threads = ("1 intra-op and 1 inter-op thread per worker (so that other processes on the shared host disturb the "
               "timings less)" if s["threads"] == 1 else
               f"{s['threads'] or 'default (one per core)'} intra-/inter-op threads per worker")
    return (
        f"Workload: search.supernet.cifar_space(width={s['width']:g}, depth={s['depth']}, "
        f"input_size={s['input_size']}), candidates = the first N odd kernel sizes from 3 (N in {s['ns']}), batch "
        f"{s['batch_size']} of fixed random 0-255 images and labels (no input pipeline), 10 classes, float32, "
        f"TensorFlow CPU kernels, {threads}; at these settings weights and optimizer slots are a few MiB and "
        f"activations dominate the peak. Modes: fixed = plain k_max DepthwiseConv2D (no search), meta = meta-kernel "
        f"layer (one k_max depthwise conv of the masked, Gumbel-softmax-weighted meta kernel, output times the keep "
        f"probability 1 - p_None), multi = DARTS-style N depthwise convs and their weighted sum; same widths. One "
        f"training step = forward with BatchNormalization in training mode, sparse softmax cross-entropy, gradients "
        f"of all trainable variables, SGD(momentum 0.9) update of the weights and (meta/multi) Adam update of alpha, "
        f"in one tf.function with jit_compile=False, traced before timing and warmed up with {s['warmup']} untimed "
        f"steps. Each (N, mode) runs in its own fresh process per round, {s['rounds']} round(s) round-robin with the "
        f"order rotated every round, {s['steps']} timed steps per process; step time = median of all timed steps of "
        f"a configuration (wall clock; step_cpu_ms = process CPU time), ratios = ratios of these medians, spread = "
        f"per-round medians and per-round paired ratios. Memory (primary, used in the *_mem ratios): peak bytes in "
        f"use of TensorFlow's CPU allocator during a steady-state step, median over all timed steps (workers run "
        f"with TF_CPU_ALLOCATOR_USE_BFC=true so that tf.config.experimental.get_memory_info('CPU:0') has statistics; "
        f"with the default CPU allocator it raises ValueError), stats reset before each step; it counts weights, "
        f"optimizer slots, the batch, activations kept for backward, gradients and temporaries (as BFC chunk sizes), "
        f"not the Python/TF runtime. Secondary, allocator-agnostic: growth of the process's peak RSS (VmHWM, reset "
        f"via /proc/self/clear_refs right before the first training step, after model/optimizer build, batch "
        f"creation and tracing) over the RSS at that point; ru_maxrss growth too. op_costs: forward+backward of one "
        f"depthwise conv per kernel size at every block's shape, summed, in a separate worker.")


def _plot(path: str, results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ns = list(results)
    colors = {"fixed": "#888888", "meta": "#1f77b4", "multi": "#d62728"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.26
    xs = np.arange(len(ns))
    for ax, key, label in ((axes[0], "step_ms", "training step time (ms, median)"),
                           (axes[1], results[ns[0]]["memory_measure"], "peak memory (MiB)")):
        for i, mode in enumerate(MODES):
            vals = [results[n]["modes"][mode][key] or 0.0 for n in ns]
            err = None
            if key == "step_ms":
                sp = [results[n]["modes"][mode]["step_ms_round_spread"] for n in ns]
                err = np.array([[v - s_["min"] for v, s_ in zip(vals, sp)], [s_["max"] - v for v, s_ in zip(vals, sp)]])
                err = np.clip(err, 0, None)
            bars = ax.bar(xs + (i - 1) * width, vals, width, yerr=err, capsize=3, color=colors[mode], label=mode)
            for bar, n in zip(bars, ns):
                if mode != "fixed":
                    r = results[n]["meta_over_fixed_" + ("time" if key == "step_ms" else "mem")] if mode == "meta" \
                        else results[n]["multi_over_meta_" + ("time" if key == "step_ms" else "mem")]
                    ref = "fixed" if mode == "meta" else "meta"
                    ax.annotate(f"{r:.2f}×\n/{ref}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=7)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"N={n}\n{{{','.join(map(str, results[n]['candidates']))}}}" for n in ns])
        ax.set_ylabel(label)
        ax.margins(y=0.2)
        ax.legend()
    axes[1].set_title("allocator peak" if key == "alloc_peak_mib" else "RSS peak growth", fontsize=9)
    axes[0].set_title("error bars: min/max of per-round medians", fontsize=9)
    fig.suptitle("Supernet training-step cost: fixed k_max vs meta-kernel vs multi-path (DARTS)")
    fig.tight_layout()
    from common.io import atomic_write
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def _report(s: dict, runs: dict, op_costs: dict | None, host: dict, wall_s: float, quick: bool) -> dict:
    """The output JSON: ``N`` (ratios, per-mode medians and spreads, each worker's raw measurements), ``host`` (with
    the run's settings under ``host["run"]``), ``method``, ``targets``, ``command``."""
    results = _summarize(s, runs)
    if op_costs is not None:
        _analysis(results, op_costs)
    for (n, mode), rs in runs.items():
        results[str(n)]["modes"][mode]["raw_per_round"] = [
            {k: v for k, v in r.items() if k not in ("threads", "mode", "n", "candidates")} for r in rs]
    first = next(iter(runs.values()))[0]
    host = dict(host, run={"settings": dict(s, quick=quick), "wall_s": round(wall_s, 1),
                           "worker_env": harness.WORKER_ENV, "tf_threads": first.get("threads")})
    return harness.round_floats({"N": results, "host": host, "method": _method(s),
                   "targets": {"bounds": TARGETS, "verdict": _check_targets(results)}, "command": COMMAND})


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    s = _check(_settings())
    if FLAGS.worker is not None:
        return _worker_main(s)
    plot = os.path.splitext(FLAGS.out)[0] + ".png" if FLAGS.plot is None else FLAGS.plot
    out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out: {out_dir} is not a directory")

    from tqdm import tqdm

    configs = [(n, mode) for n in s["ns"] for mode in MODES]
    runs = {c: [] for c in configs}
    host = harness.host_info()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="supernet_cost_") as tmpdir:
        with tqdm(total=s["rounds"] * len(configs) + int(s["op_costs"]), file=sys.stderr, desc="workers",
                  unit="proc") as bar:
            for r in range(s["rounds"]):
                k = r % len(configs)
                order = configs[k:] + configs[:k]
                for n, mode in order:
                    bar.set_postfix_str(f"round {r + 1} N={n} {mode}")
                    runs[(n, mode)].append(_launch(s, mode, n, tmpdir))
                    bar.update()
            op_costs = None
            if s["op_costs"]:
                bar.set_postfix_str("op costs")
                op_costs = _launch(s, "ops", max(s["ns"]), tmpdir)
                bar.update()
    report = _report(s, runs, op_costs, host, time.time() - started, bool(FLAGS.quick))
    results = report["N"]
    harness.write_json(FLAGS.out, report)
    if plot:
        _plot(plot, results)
    for n, r in results.items():
        print(f"N={n}: meta/fixed time {r['meta_over_fixed_time']:.3f} mem {r['meta_over_fixed_mem']:.3f} | "
              f"multi/meta time {r['multi_over_meta_time']:.3f} mem {r['multi_over_meta_mem']:.3f}")


if __name__ == "__main__":
    flags.mark_flag_as_required("out")
    run(main)
