"""Validates the latency lookup table (:mod:`search.latency`): predicted vs measured latency of random architectures.

``--n_archs`` random architectures are derived from the meta-kernel MBConv space (default: ``imagenet_space()``,
candidates {3, 5, 7, 9}, at ``--input_size`` 160): per architecture a keep level ``c ~ U(0.15, 1)``; per block with an
expansion conv, ``round(expanded width · clip(c + U(−0.15, 0.15), 0.05, 1))`` filters kept (pruning), split over a
random non-empty subset of the candidate kernel sizes (random composition); the block without expansion picks one
kernel size. Each is a full :class:`~models.spec.ModelSpec` (``SearchSpace.assemble``), like
:meth:`search.supernet.MetaKernelSupernet.derive` writes them.

One :func:`search.latency.profile` session then (a) builds the LUT entries the cache ``--lut`` lacks — every
architecture converted once to float32 TFLite and sliced into stem / block / head models, timed in *chain* context —
and (b) times every whole architecture alone, interleaved with (a) in random order per round, same interpreter
settings (LiteRT ``Interpreter(num_threads=--threads)``, XNNPACK, batch 1, ``--warmup`` untimed calls, ``--rounds`` ×
``--runs`` timed calls). The primary clock is the calling thread's CPU time with one thread (robust to other load on
a shared host; ``--clock``). MAPE and Spearman's ρ of predicted vs measured are the result; also recorded: the same
with parts timed in isolation (``--isolated``), in wall-clock time, with the MACs-affine fallback alone (each
architecture's own block entries removed from the table; per slot group and per kind), and a whole-model
MACs-affine fit (leave-one-out).

    python -m benchmarks.latency_model --out benchmarks/results/latency_model.json

writes the JSON, a scatter PNG beside it (predicted vs measured, y = x) and the LUT cache.

``--space=spos_imagenet`` (or ``spos_cifar``) does the same for the SPOS ShuffleNetV2 space (paper Table 2 at 224,
the paper's channel ratios): random paths are uniform samples, and ``--cover`` (default) adds one path per
(block choice, channel ratio) to the table so it has every block key of the space — the table
``recipes.search_spos --latency_table`` needs for a latency constraint:

    python -m benchmarks.latency_model --space=spos_imagenet --out benchmarks/results/latency_model_spos.json
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from benchmarks import harness  # noqa: E402
from recipes.cli import UsageError, run  # noqa: E402

DEFAULT_LUT = os.path.join("benchmarks", "results", "latency_lut.json")
TARGETS = {"mape_max": 8.0, "spearman_min": 0.95}
QUICK = dict(space="cifar", width=0.25, input_size=32, n_archs=3, warmup=3, runs=2, rounds=2, isolated=False,
             whole_sessions=0)
SPACES = ["imagenet", "cifar", "spos_imagenet", "spos_cifar"]
DEFAULT_SIZE = {"imagenet": 160, "cifar": 64, "spos_imagenet": 224, "spos_cifar": 32}
SPOS_LUT = os.path.join("benchmarks", "results", "latency_lut_spos.json")

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output JSON path (a PNG scatter plot is written beside it unless --plot says "
                                 "otherwise).")
flags.DEFINE_string("plot", None, "Scatter PNG path (default: --out with .png; empty string: no plot).")
flags.DEFINE_string("lut", None, f"LUT cache (default {DEFAULT_LUT}; with --quick none; empty string: none). "
                                 "Entries it has are reused, new ones are added and the file rewritten.")
flags.DEFINE_boolean("fresh_lut", False, "Ignore an existing --lut file and time every part anew (then overwrite it).")
flags.DEFINE_integer("n_archs", 30, "Random architectures to predict and measure.")
flags.DEFINE_enum("space", "imagenet", SPACES,
                  "Search space: the meta-kernel MBConv space search.supernet.imagenet_space() / cifar_space(--width), "
                  "or the SPOS ShuffleNetV2 space search.spos.imagenet_space() / cifar_space(--width) with the "
                  "paper's channel ratios 0.2-1.6 (spos_*: the LUT defaults to " + SPOS_LUT + ").")
flags.DEFINE_integer("input_size", None, "Square input size (default: 160 imagenet, 64 cifar, 224 spos_imagenet, "
                                         "32 spos_cifar).")
flags.DEFINE_float("width", 1.0, "Width multiplier of cifar_space.")
flags.DEFINE_boolean("cover", True, "spos_* spaces: also put one architecture per (block choice, channel ratio) "
                                    "into the table (every block at that choice), so that the LUT has every block "
                                    "key of the space for the search's latency constraint; validation metrics are "
                                    "over the random architectures only.")
flags.DEFINE_integer("threads", 1, "Interpreter threads (mobile-style default 1).")
flags.DEFINE_enum("clock", "auto", ["auto", "cpu", "wall"], "Clock: cpu = the calling thread's CPU time (default with "
                  "1 thread), wall = perf_counter (default with more threads).")
flags.DEFINE_integer("warmup", 20, "Untimed invocations of every model after allocate_tensors.")
flags.DEFINE_integer("runs", 5, "Timed invocations of every model (or chain pass) per round.")
flags.DEFINE_integer("rounds", 8, "Rounds; every round visits all models/chains in a new random order.")
flags.DEFINE_integer("whole_sessions", 2, "Also time the random architectures' whole models in this many sessions of "
                     "their own (whole models only, interleaved rounds), apart from the profile session and its "
                     "~10x more part interpreters (whose whole-model medians drifted by up to 50% on this host, "
                     "benchmarks.ednas_latency): their mean is the measurement the metrics use and their difference "
                     "its repeatability (the MAPE's noise floor). 0: the in-session measurement, as before.")
flags.DEFINE_integer("whole_rounds", 10, "Rounds of each whole-model session (4 x --runs timed calls per model and "
                                         "round).")
flags.DEFINE_integer("seed", 0, "Seed of the architectures, weights, inputs and timing order.")
flags.DEFINE_boolean("isolated", True, "Also time every new part alone (the comparison with chain context).")
flags.DEFINE_boolean("quick", False, f"Tiny settings for tests: {QUICK}.")
flags.DEFINE_boolean("calibrate", False, "Write the whole-model calibration (measured ≈ scale · Σ parts + offset, "
                     "least squares over every architecture) into the --lut file, where searches apply it "
                     "(search.latency.LatencyTable.calibrated); its leave-one-out error is in the result's "
                     "comparisons.calibrated_loo. With --reanalyze: from an existing --out, timing nothing.")
flags.DEFINE_boolean("reanalyze", False, "Time nothing: recompute the analyses that need only the per-architecture "
                     "predictions and measurements (whole-model calibration, timing spread) in an existing --out and "
                     "rewrite it.")


def _settings() -> dict:
    s = {k: FLAGS[k].value for k in ("space", "width", "input_size", "n_archs", "warmup", "runs", "rounds",
                                      "isolated", "threads", "clock", "seed", "whole_sessions",
                                      "whole_rounds")}
    if FLAGS.quick:  # quick overrides the defaults, never a flag the user gave explicitly
        for k, v in QUICK.items():
            if not FLAGS[k].present:
                s[k] = v
    if s["input_size"] is None:
        s["input_size"] = DEFAULT_SIZE[s["space"]]
    lut = FLAGS.lut
    if lut is None:
        lut = "" if FLAGS.quick else (SPOS_LUT if s["space"].startswith("spos") else DEFAULT_LUT)
    s["cover"] = FLAGS.cover and s["space"].startswith("spos")
    s["lut"] = lut
    return s


def _check(s: dict) -> dict:
    if not FLAGS.out:
        raise UsageError("--out: an output JSON path is required")
    if os.path.isdir(FLAGS.out):
        raise UsageError(f"--out {FLAGS.out}: is a directory")
    for name, lo in (("n_archs", 2), ("warmup", 0), ("runs", 1), ("rounds", 1), ("threads", 1),
                     ("whole_sessions", 0), ("whole_rounds", 1)):
        if s[name] < lo:
            raise UsageError(f"--{name}: must be ≥ {lo}, got {s[name]}")
    if s["input_size"] < 8:
        raise UsageError(f"--input_size: must be ≥ 8, got {s['input_size']}")
    if not 0.0 < s["width"] <= 8.0:
        raise UsageError(f"--width: must be in (0, 8], got {s['width']:g}")
    if s["clock"] == "cpu" and s["threads"] != 1:
        raise UsageError(f"--clock=cpu: measures the calling thread only, so it needs --threads=1 (got "
                         f"{s['threads']})")
    if s["lut"] and os.path.isdir(s["lut"]):
        raise UsageError(f"--lut {s['lut']}: is a directory")
    if FLAGS.calibrate and not s["lut"]:
        raise UsageError("--calibrate: needs a --lut file to write the calibration into (--quick times without one)")
    return s


# ------------------------------------------------------------------------------------------------------ architectures
def make_space(s: dict):
    if s["space"].startswith("spos"):
        import dataclasses

        from search import spos as sp
        if s["space"] == "spos_imagenet":
            return dataclasses.replace(sp.imagenet_space(sp.PAPER_RATIOS), input_size=s["input_size"])
        return sp.cifar_space(s["width"], channel_ratios=sp.PAPER_RATIOS, input_size=s["input_size"])
    from search.metakernel_space import cifar_space, imagenet_space
    if s["space"] == "imagenet":
        return imagenet_space().replace(input_size=s["input_size"])
    return cifar_space(width=s["width"], input_size=s["input_size"])


def sample_architecture(space, rng, name: str):
    """A random derived architecture of ``space``: per-block pruning around a per-architecture keep level, and a
    random kernel-size mix (random subset of the candidates, random split) per block. For a SPOS space: a uniform
    path (block choice and channel ratio per block, as the supernet samples them)."""
    import numpy as np

    from search import spos as sp
    if isinstance(space, sp.SposSpace):
        return sp.arch_spec(space, sp.uniform(space, rng), name=name)
    cands = list(space.candidates)
    level = rng.uniform(0.15, 1.0)
    stages: dict[int, list] = {}
    for slot in space.blocks():
        if slot.expand:
            frac = float(np.clip(level + rng.uniform(-0.15, 0.15), 0.05, 1.0))
            keep = max(1, int(round(slot.expand * frac)))
            m = int(rng.integers(1, min(len(cands), keep) + 1))
            kernels = sorted(int(k) for k in rng.choice(cands, size=m, replace=False))
            cuts = sorted(int(c) for c in rng.choice(np.arange(1, keep), size=m - 1, replace=False)) if m > 1 else []
            split = [b - a for a, b in zip([0, *cuts], [*cuts, keep])]
            block = slot.spec(kernels, split)
        else:
            block = slot.spec([int(rng.choice(cands))], [slot.in_ch])
        stages.setdefault(slot.stage, []).append(block)
    return space.assemble(tuple(tuple(b) for b in stages.values()), name)


def cover_architectures(space) -> list:
    """SPOS spaces: :func:`search.spos.cover` as specs (``cover_c{choice}_r{ratio}``)."""
    from search import spos as sp
    return [sp.arch_spec(space, a, name=f"cover_c{space.choices[a[0, 0]]}_r{space.channel_ratios[a[0, 1]]:g}")
            for a in sp.cover(space)]


# --------------------------------------------------------------------------------------------------------- analysis
def _metrics(pred, meas) -> dict:
    import numpy as np

    from search.latency import mape, spearman
    p, m = np.asarray(pred, np.float64), np.asarray(meas, np.float64)
    err = (p - m) / m * 100.0
    return {"mape": mape(p, m), "spearman": spearman(p, m), "pearson": float(np.corrcoef(p, m)[0, 1]),
            "bias_pct": float(err.mean()), "max_ape": float(np.abs(err).max()),
            "within_8pct": int(np.sum(np.abs(err) <= 8.0))}


def _macs_affine_loo(macs, meas) -> dict:
    """Whole-model ``ms ≈ a·MACs + b`` fitted on the other architectures' measurements (leave-one-out)."""
    import numpy as np
    x, y = np.asarray(macs, np.float64), np.asarray(meas, np.float64)
    pred = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        a, b = np.polyfit(x[keep], y[keep], 1)
        pred.append(a * x[i] + b)
    return dict(_metrics(pred, y), predicted_ms=[float(v) for v in pred])


def _calibration(rows: list) -> dict:
    """The table's prediction calibrated to whole models, ``measured ≈ a · predicted + b`` fitted on the other
    architectures (leave-one-out): what remains when a constant bias of the parts' sum is removed; and the timing
    spread of the whole models (median over architectures of p90 / p10 of their timed calls)."""
    import numpy as np
    x = np.array([r["predicted_ms"] for r in rows], np.float64)
    y = np.array([r["measured_ms"] for r in rows], np.float64)
    pred = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        a, b = np.polyfit(x[keep], y[keep], 1)
        pred.append(a * x[i] + b)
    a, b = np.polyfit(x, y, 1)
    spread = [r["measured_p90_ms"] / r["measured_p10_ms"] for r in rows if r.get("measured_p10_ms")]
    return {"calibrated_loo": dict(_metrics(pred, y), scale_all=float(a), offset_ms_all=float(b)),
            "measured_p90_over_p10_median": float(np.median(spread)) if spread else None}


def write_calibration(report: dict, out_path: str) -> None:
    """``--calibrate``: the result's all-architecture fit ``measured ≈ scale · predicted + offset_ms`` written into
    its LUT (``report["lut"]["path"]``) as ``calibration``, with the leave-one-out error of that calibrated
    predictor; the report records it under ``lut.calibration``."""
    from search import latency as lat
    lut = (report.get("lut") or {}).get("path")
    if not lut or not os.path.isfile(lut):
        raise UsageError(f"--calibrate: the result's LUT {lut!r} is not a file")
    try:
        table = lat.LatencyTable.load(lut)
    except lat.LatencyError as e:
        raise UsageError(f"--calibrate: {e}") from None
    if len(table) != report["lut"]["entries"]:
        raise UsageError(f"--calibrate: {lut} has {len(table)} entries, the result was measured with "
                         f"{report['lut']['entries']}: time it again")
    c = report["comparisons"]["calibrated_loo"]
    table.calibration = {"scale": c["scale_all"], "offset_ms": c["offset_ms_all"], "archs": report["n_archs"],
                         "loo_mape": c["mape"], "loo_spearman": c["spearman"], "loo_bias_pct": c["bias_pct"],
                         "raw_mape": report["mape"], "raw_bias_pct": report["bias_pct"], "fitted_on": out_path}
    table.save(lut)
    report["lut"]["calibration"] = dict(table.calibration)
    report.setdefault("targets", dict(TARGETS))["met_calibrated_loo"] = {
        "mape": c["mape"] <= TARGETS["mape_max"], "spearman": c["spearman"] >= TARGETS["spearman_min"]}
    print(f"calibration written to {lut}: measured ≈ {c['scale_all']:.4f} · Σ parts {c['offset_ms_all']:+.3f} ms "
          f"(leave-one-out MAPE {c['mape']:.2f}%, raw {report['mape']:.2f}%)")


def reanalyze(path: str) -> None:
    """``--reanalyze``: the calibration comparison of an existing result file, rewritten in place."""
    import json
    try:
        with open(path) as f:
            report = json.load(f)
        rows = report["archs"]
        if not isinstance(rows, list) or not isinstance(report["comparisons"], dict):
            raise ValueError("no archs list or comparisons")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--out={path}: not a latency_model result to reanalyze ({e})") from None
    report["comparisons"].update(_calibration(rows))
    report["reanalyzed_with"] = ("python -m benchmarks.latency_model --reanalyze "
                                 + ("--calibrate " if FLAGS.calibrate else "") + f"--out {path}")
    if FLAGS.calibrate:
        write_calibration(report, path)
    harness.write_json(path, harness.round_floats(report))
    c = report["comparisons"]["calibrated_loo"]
    spread = report["comparisons"]["measured_p90_over_p10_median"]
    print(f"{len(rows)} archs: calibrated (leave-one-out) MAPE {c['mape']:.2f}%, bias {c['bias_pct']:+.2f}%, "
          f"Spearman {c['spearman']:.4f}; timing spread p90/p10 "
          + (f"{spread:.2f}" if spread is not None else "not recorded"))


def _plot(path: str, rows: list, res: dict, s: dict, clock: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from common.io import atomic_write
    meas = np.array([r["measured_ms"] for r in rows])
    pred = np.array([r["predicted_ms"] for r in rows])
    macs = np.array([r["macs"] for r in rows]) / 1e6
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    ax = axes[0]
    lo, hi = 0.0, max(meas.max(), pred.max()) * 1.08
    xs = np.linspace(lo, hi, 2)
    ax.fill_between(xs, xs * 0.92, xs * 1.08, color="#dddddd", label="±8%")
    ax.plot(xs, xs, "k-", lw=1, label="y = x")
    iso = [r.get("predicted_isolated_ms") for r in rows]
    if all(v is not None for v in iso):
        ax.scatter(meas, iso, s=18, facecolors="none", edgecolors="#d62728",
                   label=f"parts timed alone (MAPE {res['comparisons']['isolated_context']['mape']:.1f}%)")
    ax.scatter(meas, pred, s=22, color="#1f77b4",
               label=f"LUT, chain context (MAPE {res['mape']:.1f}%, ρ {res['spearman']:.3f})")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured latency (ms, {clock} clock, median)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{len(rows)} random {s['space']}-space architectures at {s['input_size']}×{s['input_size']}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    ax.scatter(macs, meas, s=22, color="#2ca02c")
    a, b = np.polyfit(macs, meas, 1)
    mx = np.linspace(0, macs.max() * 1.05, 2)
    loo = res["comparisons"]["macs_affine_loo"]
    ax.plot(mx, a * mx + b, "k--", lw=1, label=f"affine in MACs (LOO MAPE {loo['mape']:.1f}%, ρ(MACs) "
                                                f"{res['comparisons']['macs_rank_spearman']:.3f})")
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel(f"measured latency (ms, {clock} clock)")
    ax.set_title("measured latency vs MACs", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Latency LUT (LiteRT float32, {s['threads']} thread(s), XNNPACK): predicted vs measured")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def _sampling(s: dict) -> str:
    if s["space"].startswith("spos"):
        fn = s["space"].split("_", 1)[1]
        return (f"{s['n_archs']} uniformly sampled paths of search.spos.{fn}_space"
                f"({'width=%g, ' % s['width'] if fn == 'cifar' else ''}channel_ratios=PAPER_RATIOS) at "
                f"{s['input_size']}x{s['input_size']} (seed {s['seed']}): per block one of the choices 3/5/7/x and "
                f"one mid-channel ratio 0.2-1.6 (search.spos.uniform)"
                + ("; the table also holds one path per (choice, ratio) with every block at it (cover_*), so it has "
                   "every block key of the space; metrics are over the random paths only" if s["cover"] else "")
                + ". ")
    return (f"{s['n_archs']} random architectures of search.supernet.{s['space']}_space"
            f"{'(width=%g)' % s['width'] if s['space'] == 'cifar' else '()'} at {s['input_size']}x{s['input_size']} "
            f"(seed {s['seed']}): per architecture a keep level c ~ U(0.15, 1); per block with an expansion conv, "
            f"round(expanded width * clip(c + U(-0.15, 0.15), 0.05, 1)) filters kept, split over a random non-empty "
            f"subset of the candidate kernel sizes at random cut points; the block without expansion picks one "
            f"kernel size. ")


def _method(s: dict, clock: str) -> str:
    return (
        _sampling(s) + f"Each architecture is built (models.builder, random weights), converted once to float32 TFLite "
        f"(frozen concrete function, TFLite builtins) and the flatbuffer cut into stem / block / head models "
        f"(search.latency.split_tflite: the same operators as in the whole model). LUT entries are timed in chain "
        f"context: an architecture's parts run in model order, each output copied into the next part's input "
        f"outside the timed region, every invoke() timed on its own; an entry is the median over all its timed "
        f"calls (pooled over the architectures it appears in), minus the invocation overhead of a trivial model "
        f"(added back once per prediction). Whole architectures are timed alone in the same session; all chains, "
        f"whole models (and isolated parts) run in a new random order every round: {s['rounds']} rounds x "
        f"{s['runs']} timed calls after {s['warmup']} untimed calls at interpreter creation and one untimed pass "
        f"per round. Interpreter: ai_edge_litert.interpreter.Interpreter(num_threads={s['threads']}), default "
        f"XNNPACK delegate, batch 1. Clock: {clock} ("
        + ("the calling thread's CPU time, time.thread_time_ns; with one interpreter thread all work runs on the "
           "calling thread, and CPU time leaves out the time the thread waits for a core on a shared host; wall-"
           "clock numbers are under comparisons.wall_clock" if clock == "cpu" else "time.perf_counter_ns")
        + "). "
        + (f"The measurement the metrics use is the mean over {s['whole_sessions']} later sessions that time the "
           f"whole models only ({s['whole_rounds']} interleaved rounds x {4 * s['runs']} calls each); the "
           f"in-session measurement is under comparisons.measured_in_profile_session. " if s["whole_sessions"]
           else "")
        + "Prediction = overhead + sum of the parts' entries (keys not in the table: MACs-affine fit of the "
          "part's slot group, else of its kind; comparisons.fallback_only* predict every block that way with the "
          "architecture's own block entries removed). MAPE = mean |pred - meas| / meas; Spearman = Pearson "
          "correlation of average ranks.")


def _whole_sessions(specs, s: dict, clock: str) -> dict:
    """The whole models of ``specs`` timed in ``s["whole_sessions"]`` sessions of their own (no part interpreters
    alive): per model the mean of the sessions' medians (p10/p90 averaged likewise), and the sessions'
    repeatability (|difference| / mean for two sessions, max − min over the mean for more)."""
    import keras
    import numpy as np

    from models.builder import build
    from search.tflite_timing import to_tflite
    bufs = {}
    for spec in specs:
        keras.backend.clear_session()
        bufs[spec.name] = to_tflite(build(spec))
    sessions = []
    for i in range(s["whole_sessions"]):
        print(f"whole-model session {i + 1}/{s['whole_sessions']} ({len(bufs)} models)", file=sys.stderr, flush=True)
        sessions.append(harness.litert_latency(bufs, rounds=s["whole_rounds"], runs=4 * s["runs"], clock=clock))
    models = {n: {k: float(np.mean([w[n][k] for w in sessions])) for k in ("median_ms", "p10_ms", "p90_ms")}
              for n in bufs}
    med = np.array([[w[n]["median_ms"] for n in bufs] for w in sessions])
    spread = (med.max(axis=0) - med.min(axis=0)) / med.mean(axis=0)
    return {"models": models, "repeatability": {
        "sessions": len(sessions), "mean_rel_spread": float(spread.mean()), "max_rel_spread": float(spread.max()),
        "note": "per whole model (max - min) / mean of its medians over the sessions: the noise floor of the MAPE"}}


# ------------------------------------------------------------------------------------------------------------- main
def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.reanalyze:
        return reanalyze(FLAGS.out)
    s = _check(_settings())
    plot = os.path.splitext(FLAGS.out)[0] + ".png" if FLAGS.plot is None else FLAGS.plot
    started = time.time()
    host = harness.host_info()

    import numpy as np

    from models.counting import count
    from search import latency as lat

    clock = lat.resolve_clock(s["clock"], s["threads"])
    table, reused_from = None, None
    if s["lut"] and os.path.exists(s["lut"]) and not FLAGS.fresh_lut:
        try:
            cached = lat.LatencyTable.load(s["lut"])
        except lat.LatencyError as e:
            raise UsageError(f"--lut: {e}") from None
        reason = cached.compatible(s["threads"], clock, "chain")
        if reason:
            print(f"latency_model: not reusing {s['lut']}: {reason}; building a new table", file=sys.stderr)
        else:
            table, reused_from = cached, s["lut"]
    space = make_space(s)  # imports TensorFlow: after every check of the input
    rng = np.random.default_rng(s["seed"])
    specs = [sample_architecture(space, rng, f"arch{i:02d}") for i in range(s["n_archs"])]
    cover = cover_architectures(space) if s["cover"] else []
    entries_before = 0 if table is None else len(table)
    session = lat.profile(specs + cover, table, threads=s["threads"], warmup=s["warmup"], runs=s["runs"],
                          rounds=s["rounds"], seed=s["seed"], clock=clock, context="chain",
                          isolated=s["isolated"], measure_models=True, progress=True)
    table = session.table
    if len(table) != entries_before:
        table.calibration = None  # fitted to other entries: --calibrate fits it again
    if s["lut"]:
        table.save(s["lut"])

    apart = _whole_sessions(specs, s, clock) if s["whole_sessions"] else None
    iso_table = session.table_for(clock, "isolated") if s["isolated"] else None
    wall_table = session.table_for("wall", "chain") if clock != "wall" else None
    rows, macs, meas, pred, fallback = [], [], [], [], 0
    for spec in specs:
        e = table.explain(spec)
        m = session.models[spec.name]
        c = count(spec)
        timed = m[clock] if apart is None else apart["models"][spec.name]
        row = {"name": spec.name, "macs": c.macs, "params": c.params, "predicted_ms": e.ms,
               "measured_ms": timed["median_ms"], "measured_p10_ms": timed["p10_ms"],
               "measured_p90_ms": timed["p90_ms"], "measured_wall_ms": m["wall"]["median_ms"],
               "measured_in_profile_session_ms": m[clock]["median_ms"],
               "ape_pct": abs(e.ms - timed["median_ms"]) / timed["median_ms"] * 100.0,
               "fallback_parts": e.fallback, "parts": len(e.parts),
               "blocks": [[p["key"], p["ms"]] for p in e.parts if p["kind"] in ("ir", "shuffle", "conv")]}
        if iso_table is not None and not iso_table.missing([spec]):
            row["predicted_isolated_ms"] = iso_table.predict(spec)
        rows.append(row)
        macs.append(c.macs)
        meas.append(timed["median_ms"])
        pred.append(e.ms)
        fallback += e.fallback

    res = _metrics(pred, meas)
    comparisons: dict = {"macs_rank_spearman": lat.spearman(macs, meas),
                         "macs_affine_loo": _macs_affine_loo(macs, meas), **_calibration(rows)}
    # The fallback alone: each architecture's block entries removed (stem and head stay: every architecture of a
    # space shares them), its blocks predicted by the MACs-affine fits over the other architectures' block entries.
    for name, level in (("fallback_only", "group"), ("fallback_only_per_kind", "kind")):
        fb_pred = []
        for spec in specs:
            own = {p.key for p in lat.parts(spec) if p.kind in ("ir", "shuffle", "conv")}
            fb_pred.append(table.without(own).predict(spec, fallback=level))
        comparisons[name] = dict(_metrics(fb_pred, meas), note=(
            "every block of the architecture unseen: predicted by the MACs-affine fit of its slot group (same "
            "position in the space) over the other architectures' entries" if level == "group" else
            "every block of the architecture unseen: predicted by one MACs-affine fit per block kind"))
    comparisons["fallback_only_per_kind"]["fit_all_entries"] = {
        k: v for k, v in table.fallback_fit().items() if k in lat.KINDS or k == "all"}
    if apart is not None:
        comparisons["measured_in_profile_session"] = dict(
            _metrics(pred, [r["measured_in_profile_session_ms"] for r in rows]),
            note="the same predictions against the whole models timed inside the profile session (among the parts' "
                 "interpreters), the measurement before --whole_sessions")
        comparisons["measurement_repeatability"] = apart["repeatability"]
    if iso_table is not None and all("predicted_isolated_ms" in r for r in rows):
        comparisons["isolated_context"] = _metrics([r["predicted_isolated_ms"] for r in rows], meas)
    if wall_table is not None and not wall_table.missing(specs):
        wall_meas = [r["measured_wall_ms"] for r in rows]
        comparisons["wall_clock"] = dict(_metrics([wall_table.predict(sp) for sp in specs], wall_meas),
                                         note="LUT and measurements in wall-clock time (perf_counter_ns) of the "
                                              "same calls; other processes' load inflates long invocations more")
    elif wall_table is not None:
        comparisons["wall_clock"] = None

    report = {
        "n_archs": len(specs), "mape": res["mape"], "spearman": res["spearman"], "threads": s["threads"],
        "host": dict(host, litert=lat.versions()["ai-edge-litert"], loadavg_at_end=lat.host()["loadavg"],
                     cpu_model=lat.host()["cpu_model"]),
        "clock": clock, "pearson": res["pearson"], "bias_pct": res["bias_pct"], "max_ape": res["max_ape"],
        "within_8pct": res["within_8pct"],
        "targets": dict(TARGETS, met={"mape": res["mape"] <= TARGETS["mape_max"],
                                      "spearman": res["spearman"] >= TARGETS["spearman_min"]}),
        "space": ({"name": s["space"], "kind": s["space"], "input_size": s["input_size"],
                   "choices": list(space.choices), "channel_ratios": list(space.channel_ratios),
                   "blocks": space.n_blocks, "width": s["width"] if s["space"] == "spos_cifar" else None,
                   "cover_archs": len(cover)} if s["space"].startswith("spos") else
                  {"name": space.name, "kind": s["space"], "input_size": s["input_size"],
                   "candidates": list(space.candidates), "blocks": len(list(space.blocks())),
                   "width": s["width"] if s["space"] == "cifar" else None}),
        "lut": {"path": s["lut"] or None, "reused_from": reused_from, "entries": len(table),
                "entries_reused": entries_before, "entries_timed_now": len(table) - entries_before,
                "overhead_ms": table.overhead_ms, "fallback_parts": fallback, "key_format": lat.KEY_FORMAT},
        "timing": {"warmup": s["warmup"], "runs_per_round": s["runs"], "rounds": s["rounds"], "clock": clock,
                   "whole_sessions": s["whole_sessions"], "whole_rounds": s["whole_rounds"],
                   "context": "chain", "method": "slice", "isolated_comparison": s["isolated"],
                   "overhead_ms": session.overhead, "session_s": session.wall_s,
                   "runtime": table.meta.get("runtime")},
        "comparisons": comparisons,
        "archs": rows,
        "seed": s["seed"], "quick": bool(FLAGS.quick),
        "method": _method(s, clock),
        "command": "python -m benchmarks.latency_model " + " ".join(sys.argv[1:]),
        "wall_s": time.time() - started,
    }
    if FLAGS.calibrate:
        write_calibration(report, FLAGS.out)
    report = harness.round_floats(report)
    harness.write_json(FLAGS.out, report)
    if plot:
        _plot(plot, rows, report, s, clock)
    print(f"{len(specs)} archs: MAPE {res['mape']:.2f}% (target ≤ {TARGETS['mape_max']:g}), Spearman "
          f"{res['spearman']:.4f} (target ≥ {TARGETS['spearman_min']:g}); LUT {len(table)} entries "
          f"({len(table) - entries_before} timed now), fallback parts {fallback}; {clock} clock; "
          f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    flags.mark_flag_as_required("out")
    run(main)
