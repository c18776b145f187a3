"""FGNAS's latency model on this host (issue 17 E3's prerequisite): fit, calibrate, validate.

1. Every condition of the space (:func:`search.fgnas_latency.condition_keys`) is timed as single-branch LiteRT
   models at several widths and fitted as ``a + b · MACs`` (:func:`search.fgnas_latency.fit`).
2. ``fixed_ms`` (stem, pooling, concatenation, head, invocation) and one scale on the operations' sum are fitted on
   ``--calibrate`` whole models (least squares).
3. ``--validate`` other random architectures (every gate on with probability drawn in [0.15, 0.9], per layer) are
   timed whole, side by side in one process, and compared with the prediction: MAPE, Spearman rank correlation and
   the bias. The issue's bar for a table that can steer a search: MAPE ≤ 5%, Spearman ≥ 0.95 on ≥ 30 models.

Writes ``--out`` (results) and ``--model_out`` (the fitted model for ``recipes.search_fgnas --resource=latency
--latency_model=…``). Timings: single-thread LiteRT, the calling thread's CPU time, interleaved rounds.

    python -m benchmarks.fgnas_latency --out benchmarks/results/fgnas_latency.json
"""
from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, write_json


def random_archs(space, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    archs = []
    for _ in range(n):
        arch = []
        for layer in space.layers():
            p = rng.uniform(0.15, 0.9)
            a = rng.random((len(space.ops), layer.channels)) < p
            a[rng.integers(len(space.ops)), rng.integers(layer.channels)] = True
            arch.append(a)
        archs.append(arch)
    return archs


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model_out", default="benchmarks/results/fgnas_latency_model.json")
    p.add_argument("--space", default="vgg", choices=["vgg", "mbconv"])
    p.add_argument("--width", type=int, default=12)
    p.add_argument("--kernels", default="1,3,5")
    p.add_argument("--acts", default="relu,prelu,tanh")
    p.add_argument("--calibrate", type=int, default=10)
    p.add_argument("--validate", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from search.fgnas_space import mbconv_space, vgg_space
    try:
        kernels = [int(k) for k in a.kernels.split(",")]
        acts = a.acts.split(",")
        space = (vgg_space(a.width, kernels, acts) if a.space == "vgg" else mbconv_space(kernels, acts))
    except ValueError as e:
        print(f"fgnas_latency: --kernels/--acts: {e}", file=sys.stderr)
        return 2
    if a.calibrate < 1 or a.validate < 2 or a.rounds < 1 or a.runs < 1:
        print("fgnas_latency: --calibrate >= 1, --validate >= 2, --rounds and --runs >= 1", file=sys.stderr)
        return 2
    from search.fgnas_latency import AffineLatency, calibrate, fit, measure_models, measure_points
    from search.latency import spearman
    from search.tflite_timing import host, versions
    t0 = time.time()
    points = measure_points(space, rounds=a.rounds, runs=a.runs, progress=True)
    coefs = fit(points)
    archs = random_archs(space, a.calibrate + a.validate, a.seed)
    measured = measure_models(space, archs, rounds=a.rounds, runs=a.runs, progress=True)
    fixed, scale = calibrate(space, coefs, archs[:a.calibrate], measured[:a.calibrate])
    model = AffineLatency(coefs, fixed, scale, {"host": host(), "versions": versions(), "threads": 1, "clock": "cpu",
                                         "space": space.backbone.name, "ops": [f"{k}x{k}/{x}" for k, x in space.ops],
                                         "rounds": a.rounds, "runs": a.runs}, points)
    model.save(a.model_out)
    pred = np.array([model.predict(space, x) for x in archs[a.calibrate:]])
    meas = np.array(measured[a.calibrate:])
    err = (pred - meas) / meas
    macs = [space.cost(x) for x in archs[a.calibrate:]]
    result = {
        "space": space.backbone.name, "ops": [f"{k}x{k}/{x}" for k, x in space.ops], "conditions": len(coefs),
        "points": sum(len(v) for v in points.values()), "fixed_ms": fixed, "scale": scale,
        "calibration_models": a.calibrate,
        "validation": {"models": len(meas), "mape": float(np.mean(np.abs(err))), "bias": float(np.mean(err)),
                       "max_abs_error": float(np.max(np.abs(err))),
                       "spearman": spearman(pred, meas),
                       "spearman_macs_vs_measured": spearman(macs, meas),
                       "measured_ms_range": [float(meas.min()), float(meas.max())]},
        "targets": {"mape_max": 0.05, "spearman_min": 0.95},
        "per_model": [{"macs": m, "measured_ms": float(y), "predicted_ms": float(x)}
                      for m, y, x in zip(macs, meas, pred)],
        "model_file": a.model_out, "host": host_info(), "wall_s": round(time.time() - t0, 1),
        "command": "python -m benchmarks.fgnas_latency " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_json(a.out, round_floats(result))
    v = result["validation"]
    print(f"MAPE {v['mape']:.1%}, Spearman {v['spearman']:.3f} (MACs alone {v['spearman_macs_vs_measured']:.3f}), "
          f"bias {v['bias']:+.1%} on {v['models']} models", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
