"""E-DNAS's per-filter latency table on this host (issue 18: the latency-table loss's table): fit, calibrate,
validate.

1. ``--fit + --validate`` random architectures of the meta-kernel search space (:func:`search.kernel_latency.
   sample_arch`: a keep level per architecture; per block 1 … all kernel sizes with Dirichlet probabilities, filters
   drawn independently), plus the unpruned one-kernel networks, are built as zoo specs, converted to float32 TFLite,
   sliced into stem / blocks / head and timed in chain context: one :func:`search.latency.profile` session, every
   unit interleaved in random order per round, single-thread LiteRT, the calling thread's CPU time. The whole models
   are timed apart from the parts, in two sessions of their own (whole models only, interleaved rounds): their mean
   is the measured latency and their difference the measurement's repeatability (the MAPE's noise floor).
2. Per block, ``base + Σ_k a_k · n_k + c · (B − 1)`` is fitted by non-negative least squares to the ``--fit``
   architectures' block latencies (:func:`search.kernel_latency.fit`); ``fixed_ms`` (stem + head + invocation) and one
   scale are calibrated on the same architectures' whole-model latencies (:func:`search.kernel_latency.calibrate`;
   one scale per kernel size is reported beside it).
3. The ``--validate`` architectures (never fitted on) are predicted and compared with their measured whole-model
   latency: MAPE, Spearman's ρ, bias. Beside it: the table without calibration, the exact-key LUT
   (:class:`search.latency.LatencyTable`, every part of each validation model looked up) and MACs alone. The
   unpruned one-kernel networks (every filter k×k, for each candidate k: the references searches are budgeted
   against) are predicted and reported apart (``uniform_references``).
   The issue's bar for a table that can steer a search: MAPE ≤ 5%, Spearman ≥ 0.95 on ≥ 30 architectures.

Writes ``--out`` (results), a scatter PNG beside it and ``--model_out`` (the table for ``recipes.search_ednas
--latency_table=…`` / ``recipes.search_metakernel --latency_table=…``).

    python -m benchmarks.ednas_latency --out benchmarks/results/ednas_latency.json
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, write_json

TARGETS = {"mape_max": 0.05, "spearman_min": 0.95}


def _metrics(pred, meas) -> dict:
    from search.latency import spearman
    p, m = np.asarray(pred, np.float64), np.asarray(meas, np.float64)
    err = (p - m) / m
    return {"mape": float(np.mean(np.abs(err))), "bias": float(np.mean(err)), "max_abs_error": float(np.abs(err).max()),
            "spearman": spearman(p, m)}


def _plot(path: str, meas, preds: dict, title: str, refs=()) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.io import atomic_write
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    lo, hi = min(np.min(meas), *(np.min(p) for p in preds.values())), max(np.max(meas), *(np.max(p) for p in
                                                                                         preds.values()))
    if refs:
        lo = min(lo, *(min(r["measured_ms"], r["predicted_ms"]) for r in refs))
        hi = max(hi, *(max(r["measured_ms"], r["predicted_ms"]) for r in refs))
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, zorder=0, label="y = x")
    for (label, p), marker in zip(preds.items(), "osD^"):
        m = _metrics(p, meas)
        ax.scatter(meas, p, s=22, marker=marker, alpha=0.8,
                   label=f"{label}: MAPE {m['mape']:.1%}, ρ {m['spearman']:.3f}")
    for i, r in enumerate(refs):  # the unpruned one-kernel networks (not in the metrics above)
        ax.scatter([r["measured_ms"]], [r["predicted_ms"]], s=60, marker="X", color="black",
                   label="unpruned one-kernel networks (table)" if i == 0 else None)
        ax.annotate(f"{r['name']} {r['error']:+.0%}", (r["measured_ms"], r["predicted_ms"]), fontsize=8,
                    xytext=(5, -10), textcoords="offset points")
    ax.set_xlabel("measured whole-model latency (ms, CPU time, 1 thread)", fontsize=10)
    ax.set_ylabel("predicted (ms)", fontsize=10)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=9, loc="upper left")
    ax.tick_params(labelsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON (a scatter PNG is written beside it)")
    p.add_argument("--model_out", default="benchmarks/results/ednas_latency_table.json",
                   help="where the fitted per-filter table is written")
    p.add_argument("--lut_out", default="benchmarks/results/ednas_latency_lut.json",
                   help="where the timed parts (a search.latency table) are written")
    p.add_argument("--space", default="cifar", choices=["cifar", "ablation", "imagenet", "lite0"],
                   help="search space (as recipes.search_metakernel --space)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of the cifar space")
    p.add_argument("--candidates", default="3,5,7")
    p.add_argument("--input_size", type=int, default=None)
    p.add_argument("--fit", type=int, default=40, help="architectures the table is fitted and calibrated on")
    p.add_argument("--validate", type=int, default=30, help="other architectures it is checked against")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--whole_rounds", type=int, default=30,
                   help="rounds of each of the two whole-model sessions (4 × --runs timed runs per model per round)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from workflows.search_metakernel import SearchMetakernelConfig, make_space
    try:
        cands = tuple(sorted(int(k) for k in a.candidates.split(",")))
        from search.metakernel_space import check_candidates
        check_candidates(cands)
        space = make_space(SearchMetakernelConfig(space=a.space, width=a.width, input_size=a.input_size,
                                                  candidates=cands), cands, classes=10)
    except ValueError as e:
        print(f"ednas_latency: --candidates/--space: {e}", file=sys.stderr)
        return 2
    if a.fit < 8 or a.validate < 2 or a.rounds < 1 or a.runs < 1 or a.whole_rounds < 1:
        print("ednas_latency: --fit >= 8, --validate >= 2, --rounds, --runs and --whole_rounds >= 1", file=sys.stderr)
        return 2
    from models.counting import count
    from search import kernel_latency as kl
    from search.latency import parts, profile
    from search.tflite_timing import host, versions
    t0 = time.time()
    rng = np.random.default_rng(a.seed)
    archs = [kl.sample_arch(space, rng) for _ in range(a.fit + a.validate)]
    specs = [kl.arch_spec(space, x, name=f"arch{i:03d}") for i, x in enumerate(archs)]
    refs = [kl.uniform_arch(space, k) for k in cands]  # one kernel everywhere, nothing pruned: search references
    archs += refs
    specs += [kl.arch_spec(space, x, name=f"every{k}x{k}") for k, x in zip(cands, refs)]
    session = profile(specs, threads=1, warmup=a.warmup, runs=a.runs, rounds=a.rounds, seed=a.seed,
                      input_size=space.input_size, clock="cpu", progress=True)
    table = session.table
    table.save(a.lut_out)  # the parts' timings: the fit can be redone without timing again
    # whole models in sessions of their own, as a user times a model (not among the ~10× more part interpreters
    # of the profile session, whose whole-model medians drifted from these by up to 50% on this host), twice:
    # the mean is the measurement, the difference between the sessions its repeatability
    import keras

    from benchmarks.harness import litert_latency
    from models.builder import build
    from search.tflite_timing import to_tflite
    bufs = {}
    for s in specs:
        keras.backend.clear_session()
        bufs[s.name] = to_tflite(build(s))
    sessions = [litert_latency(bufs, rounds=a.whole_rounds, runs=4 * a.runs) for _ in range(2)]
    both = np.array([[w[s.name]["median_ms"] for s in specs] for w in sessions])
    measured = both.mean(axis=0)
    repeat = np.abs(both[0] - both[1]) / measured

    def part_ms(spec):
        return [float(table.entries[q.key]["ms"]) for q in parts(spec, space.input_size)]

    fit_ms = [part_ms(s) for s in specs[:a.fit]]
    fixed = table.overhead_ms + float(np.median([ms[0] + ms[-1] for ms in fit_ms]))  # stem + head + invocation
    meta = {"host": host(), "versions": versions(), "threads": 1, "clock": "cpu", "context": "chain",
            "rounds": a.rounds, "runs": a.runs, "warmup": a.warmup, "fit_archs": a.fit, "seed": a.seed,
            "source": "python -m benchmarks.ednas_latency " + " ".join(sys.argv[1:] if argv is None else argv)}
    raw = kl.fit(space, archs[:a.fit], [ms[1:-1] for ms in fit_ms], fixed, meta)
    model = kl.calibrate(raw, space, archs[:a.fit], measured[:a.fit])
    per_kernel = kl.calibrate(raw, space, archs[:a.fit], measured[:a.fit], per_kernel=True)
    model.save(a.model_out)
    val = slice(a.fit, a.fit + a.validate)
    meas = measured[val]
    pred = {"per-filter table": np.array([model.predict(space, x) for x in archs[val]]),
            "per-kernel scales": np.array([per_kernel.predict(space, x) for x in archs[val]]),
            "uncalibrated": np.array([raw.predict(space, x) for x in archs[val]]),
            "exact-key LUT": np.array([table.predict(s, space.input_size) for s in specs[val]])}
    macs = [count(s).macs for s in specs[val]]
    from search.latency import spearman
    result = {
        "space": space.name, "input_size": space.input_size, "candidates": list(cands),
        "fit_archs": a.fit, "fixed_ms": model.fixed_ms, "calibration": model.fit["calibration"],
        "slot_fit": model.fit["slots"],
        "validation": {"models": len(meas), **_metrics(pred["per-filter table"], meas),
                       "per_kernel_calibration": dict(_metrics(pred["per-kernel scales"], meas),
                                                      **per_kernel.fit["calibration"]),
                       "uncalibrated": _metrics(pred["uncalibrated"], meas),
                       "exact_key_lut": _metrics(pred["exact-key LUT"], meas),
                       "spearman_macs_vs_measured": spearman(macs, meas),
                       "measured_ms_range": [float(meas.min()), float(meas.max())]},
        "uniform_references": [
            {"name": s.name, "macs": count(s).macs, "measured_ms": float(y), "predicted_ms": model.predict(space, x),
             "error": model.predict(space, x) / float(y) - 1}
            for s, x, y in zip(specs[a.fit + a.validate:], archs[a.fit + a.validate:],
                               measured[a.fit + a.validate:])],
        "measurement_repeatability": {
            "sessions": 2, "mean_abs_rel_diff": float(repeat.mean()), "max_abs_rel_diff": float(repeat.max()),
            "note": "|session 1 − session 2| / mean over every whole model: the noise floor of the MAPE"},
        "targets": TARGETS,
        "per_model": [{"name": s.name, "macs": m, "measured_ms": float(y), "predicted_ms": float(x)}
                      for s, m, y, x in zip(specs[val], macs, meas, pred["per-filter table"])],
        "fit_measured_ms": [float(v) for v in measured[:a.fit]], "lut_file": a.lut_out,
        "model_file": a.model_out, "host": host_info(), "wall_s": round(time.time() - t0, 1),
        "command": meta["source"]}
    write_json(a.out, round_floats(result))
    _plot(os.path.splitext(a.out)[0] + ".png", meas, pred,
          f"E-DNAS per-filter latency table, {space.name} at {space.input_size}², kernels {list(cands)}\n"
          f"{len(meas)} validation architectures (fitted on {a.fit} others)", result["uniform_references"])
    v = result["validation"]
    print(f"per-filter table: MAPE {v['mape']:.1%}, Spearman {v['spearman']:.3f}, bias {v['bias']:+.1%} on "
          f"{v['models']} models (uncalibrated {v['uncalibrated']['mape']:.1%}; exact-key LUT "
          f"{v['exact_key_lut']['mape']:.1%}; MACs alone ρ {v['spearman_macs_vs_measured']:.3f}; measurement "
          f"repeatability {repeat.mean():.1%}); uniform "
          f"references: " + ", ".join(f"{r['name']} {r['error']:+.1%}" for r in result["uniform_references"]),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
