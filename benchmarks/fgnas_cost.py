"""Training-step time and peak memory of the FGNAS supernet against the same network with one fixed operation
(issue 17: the paper's claim that the per-channel gated supernet "runs efficiently").

Configurations, on :func:`search.fgnas_space.vgg_space` (or ``--space=mbconv``) at 32×32:

- ``fixed``: the backbone itself (every layer one 3×3 conv, ReLU) built by :func:`models.builder.build` — a plain
  network; one step = forward, cross-entropy, gradients, SGD-momentum update;
- ``gated1``: the FGNAS supernet with that one operation (the gates' own overhead: ψ, the straight-through gate, the
  masked mean, R(ψ));
- ``gated``: the supernet with every operation of ``--kernels`` × ``--acts`` (default 1,3,5 × relu,tanh: 6), one
  gate-phase step = forward, CE + λ·R/R₀, gradients of weights and ψ, both optimizers.

Every configuration runs in a fresh worker process per round (round-robin, ``--rounds``), ``--steps`` timed steps
after ``--warmup``; memory is the CPU allocator's peak during a step (``TF_CPU_ALLOCATOR_USE_BFC=true``) and RSS
growth (`benchmarks.harness.time_train_step`). Ratios are of medians, with the per-round spread.

    python -m benchmarks.fgnas_cost --out benchmarks/results/fgnas_cost.json
"""
from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from benchmarks import harness  # noqa: E402
from recipes.cli import UsageError, run  # noqa: E402

CONFIGS = ("fixed", "gated1", "gated")
COMMAND = "python -m benchmarks.fgnas_cost --out benchmarks/results/fgnas_cost.json"
QUICK = dict(width=4, rounds=1, steps=2, warmup=1, batch_size=8, input_size=16)

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output JSON path.")
flags.DEFINE_enum("space", "vgg", ["vgg", "mbconv"], "Backbone (search.fgnas_space).")
flags.DEFINE_integer("width", 12, "Width of the 'vgg' backbone.")
flags.DEFINE_list("kernels", ["1", "3", "5"], "Kernel sizes of the 'gated' supernet's operations.")
flags.DEFINE_list("acts", ["relu", "tanh"], "Activations of the 'gated' supernet's operations.")
flags.DEFINE_integer("rounds", 3, "Round-robin rounds; each runs every configuration in a fresh process.")
flags.DEFINE_integer("steps", 10, "Timed steps per worker.")
flags.DEFINE_integer("warmup", 3, "Untimed steps per worker (after tracing).")
flags.DEFINE_integer("batch_size", 32, "Batch size of the fixed random batch.")
flags.DEFINE_integer("input_size", 32, "Input resolution.")
flags.DEFINE_integer("threads", 1, "TensorFlow intra-/inter-op threads per worker (0: default).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_boolean("quick", False, f"Tiny settings for tests: {QUICK}.")
flags.DEFINE_float("worker_timeout", 900.0, "Seconds before a worker is considered hung.")
flags.DEFINE_string("worker", None, "Internal: run one configuration and write its JSON to --out.")


def _settings() -> dict:
    s = {k: FLAGS[k].value for k in ("space", "width", "rounds", "steps", "warmup", "batch_size", "input_size",
                                     "threads", "seed")}
    s["kernels"], s["acts"] = list(FLAGS.kernels), list(FLAGS.acts)
    if FLAGS.quick:
        s.update({k: v for k, v in QUICK.items() if not FLAGS[k].present})
    if not FLAGS.out:
        raise UsageError("--out: an output JSON path is required")
    for name, lo in (("rounds", 1), ("steps", 1), ("warmup", 0), ("batch_size", 1), ("input_size", 8),
                     ("threads", 0), ("width", 1)):
        if s[name] < lo:
            raise UsageError(f"--{name}: must be ≥ {lo}, got {s[name]}")
    try:
        s["kernels"] = [int(k) for k in s["kernels"]]
        _space(s, gated=True)
    except ValueError as e:
        raise UsageError(f"--kernels/--acts: {e}") from None
    return s


def _space(s: dict, gated: bool):
    from search.fgnas_space import mbconv_space, vgg_space
    kernels, acts = (s["kernels"], s["acts"]) if gated else ((3,), ("relu" if s["space"] == "vgg" else "relu6",))
    if s["space"] == "vgg":
        return vgg_space(s["width"], kernels, acts, input_size=s["input_size"])
    return mbconv_space(kernels, acts, input_size=s["input_size"])


def _worker(config: str, s: dict) -> dict:
    tf = harness.import_tf(s["threads"])
    import keras
    import numpy as np

    from models.builder import build
    from search import fgnas

    keras.utils.set_random_seed(s["seed"])
    space = _space(s, gated=config == "gated")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(s["seed"])
    b, n = s["batch_size"], s["input_size"]
    x = tf.constant(rng.uniform(0.0, 255.0, (b, n, n, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, space.classes, (b,)).astype(np.int32))
    if config == "fixed":
        model = build(space.backbone)
        wvars, pvars, net = model.trainable_variables, [], None
    else:
        model = fgnas.build_supernet(space)
        wvars, pvars = fgnas.weight_variables(model), fgnas.gate_variables(model)
        net = fgnas.FgnasSupernet(model, space)
        r0 = float(net.resource("macs"))
    w_opt = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
    w_opt.build(wvars)
    p_opt = keras.optimizers.SGD(10.0, momentum=0.9)
    if pvars:
        p_opt.build(pvars)
    nw = len(wvars)

    @tf.function(jit_compile=False, autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            if net is not None:
                loss = loss + net.resource("macs") / r0
        grads = tape.gradient(loss, wvars + pvars)
        w_opt.apply(grads[:nw], wvars)
        if pvars:
            p_opt.apply(grads[nw:], pvars)
        return loss

    count = lambda vs: int(sum(int(np.prod(v.shape)) for v in vs))  # noqa: E731
    return {"config": config, "ops": len(space.ops), "weight_params": count(wvars), "gate_params": count(pvars),
            **harness.time_train_step(tf, step, (x, y), s["warmup"], s["steps"])}


def _args(s: dict, config: str, out: str) -> list[str]:
    return [f"--worker={config}", f"--out={out}", f"--space={s['space']}", f"--width={s['width']}",
            f"--kernels={','.join(map(str, s['kernels']))}", f"--acts={','.join(s['acts'])}",
            f"--steps={s['steps']}", f"--warmup={s['warmup']}", f"--batch_size={s['batch_size']}",
            f"--input_size={s['input_size']}", f"--threads={s['threads']}", f"--seed={s['seed']}", "--rounds=1"]


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    s = _settings()
    if FLAGS.worker:
        if FLAGS.worker not in CONFIGS:
            raise UsageError(f"--worker: one of {CONFIGS}")
        harness.write_json(FLAGS.out, _worker(FLAGS.worker, s))
        return
    from models.counting import count
    t0 = time.time()
    runs = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="fgnas-cost-") as tmp:
        for r in range(s["rounds"]):
            order = CONFIGS[r % 3:] + CONFIGS[:r % 3]
            for c in order:
                out = os.path.join(tmp, f"{c}_{r}.json")
                runs[c].append(harness.launch_worker("benchmarks.fgnas_cost", _args(s, c, out), out,
                                                     timeout=FLAGS.worker_timeout))
                print(f"round {r + 1}/{s['rounds']} {c}: {1e3 * sorted(runs[c][-1]['step_s'])[s['steps'] // 2]:.1f} "
                      "ms/step", flush=True)
    summary = {c: {**harness.summarize_steps(rs), "ops": rs[0]["ops"], "weight_params": rs[0]["weight_params"],
                   "gate_params": rs[0]["gate_params"]} for c, rs in runs.items()}
    mem = "alloc_peak_mib" if all(summary[c]["alloc_peak_mib"] for c in CONFIGS) else "rss_hwm_growth_mib"
    ratios = {}
    for num, den in (("gated1", "fixed"), ("gated", "fixed"), ("gated", "gated1")):
        ratios[f"{num}_over_{den}"] = {
            "time": summary[num]["step_ms"] / summary[den]["step_ms"],
            "time_per_round": harness.paired_ratio(runs[num], runs[den]),
            "memory": summary[num][mem] / summary[den][mem],
            "memory_per_round": harness.paired_ratio(runs[num], runs[den], "alloc_peak_bytes")}
    backbone = _space(s, gated=False).backbone
    gated = _space(s, gated=True)
    result = {
        "command": COMMAND, "settings": dict(s, quick=FLAGS.quick), "memory_measure": mem,
        "backbone": {"name": backbone.name, "macs": count(backbone).macs, "params": count(backbone).params},
        "gated_ops": [f"{k}x{k}/{a}" for k, a in gated.ops],
        "gated_supernet_deployed_macs_all_on": gated.cost(gated.full_arch()),
        "configs": summary, "ratios": ratios, "host": harness.host_info(), "wall_s": round(time.time() - t0, 1),
        "method": ("fixed = the backbone as a plain Keras model (one SGD step); gated1 = the FGNAS supernet with the "
                   "backbone's one operation (gates, STE, masked mean and R(psi) are the overhead); gated = the "
                   "supernet with every operation (one gate-phase step: CE + R/R0, weights and psi updated). Fresh "
                   "worker per configuration and round, round-robin order, fixed random batch, float32 CPU, "
                   f"{s['threads'] or 'default'} thread(s)."),
    }
    harness.write_json(FLAGS.out, harness.round_floats(result))
    for k, v in ratios.items():
        print(f"{k}: time x{v['time']:.2f}, memory x{v['memory']:.2f}")


if __name__ == "__main__":
    run(main)
