"""Float TFLite parity of every zoo model: LiteRT (XNNPACK) vs Keras on the same inputs.

    python -m benchmarks.zoo_tflite_parity --out benchmarks/results/zoo_tflite_parity.json [--input_size=224]

Every registry model is built at ``--input_size`` with randomised weights that give O(1) logits
(``models.weights.randomized_weights``; a fresh Keras init gives logits near 0, which would make the check vacuous),
exported with ``export.litert.export`` (float32) and run on ``--images`` seeded random images. The result per
model: max|Δ| of the logits, top-1 agreement, export seconds, and ops of the flatbuffer. The check passes when every
max|Δ| ≤ ``--tolerance``. This is the minute-long full-zoo form of ``tests/test_builder.py``'s TFLite parity test,
which covers every layer kind on one small spec.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, write_json


def main(argv=None) -> int:
    p = harness.ArgumentParser(prog="zoo_tflite_parity", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import zoo
    names = [n for n in a.models.split(",") if n] or list(zoo.list_models())
    unknown = [n for n in names if n not in zoo.list_models()]
    if unknown:
        print(f"zoo_tflite_parity: --models: unknown {', '.join(unknown)} (python -m zoo list)", file=sys.stderr)
        return 2
    if a.input_size < 32 or a.images < 1 or a.tolerance <= 0:
        print("zoo_tflite_parity: --input_size ≥ 32, --images ≥ 1 and --tolerance > 0", file=sys.stderr)
        return 2
    if os.path.isdir(a.out):
        print(f"zoo_tflite_parity: --out={a.out}: is a directory", file=sys.stderr)
        return 2

    import keras
    import numpy as np
    import tensorflow as tf

    from export import litert
    from models.weights import assign, randomized_weights

    tf.get_logger().setLevel("ERROR")  # Keras retraces its XLA grouped-conv function per layer shape: one warning each
    rows = {}
    x = np.random.default_rng(a.seed).uniform(0, 255, (a.images, a.input_size, a.input_size, 3)).astype(np.float32)
    for i, name in enumerate(names):
        keras.utils.set_random_seed(a.seed + i)
        model = zoo.build(name, input_size=a.input_size)
        assign(model, randomized_weights(model, a.seed + i))
        want = model(x, training=False).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.tflite")
            t0 = time.perf_counter()
            size = litert.export(model, path, "float32")
            seconds = time.perf_counter() - t0
            ops = litert.op_counts(path)
            got = litert.predict(litert.interpreter(path), x)
        diff = float(np.abs(got - want).max())
        rows[name] = {"max_abs_diff": diff, "logit_scale": float(np.abs(want).max()),
                      "top1_agree": float((got.argmax(-1) == want.argmax(-1)).mean()), "export_s": seconds,
                      "bytes": size, "ops": ops, "pass": diff <= a.tolerance}
        print(f"{name:28s} max|Δ| {diff:.2e}  (logits up to {rows[name]['logit_scale']:.1f})  export {seconds:.1f} s",
              file=sys.stderr)
    result = {"benchmark": "zoo_tflite_parity", "command": "python -m benchmarks.zoo_tflite_parity " +
              " ".join(argv if argv is not None else sys.argv[1:]),
              "input_size": a.input_size, "images": a.images, "tolerance": a.tolerance, "seed": a.seed,
              "all_pass": all(r["pass"] for r in rows.values()), "models": rows, "host": host_info()}
    write_json(a.out, round_floats(result))
    print(f"{sum(r['pass'] for r in rows.values())}/{len(rows)} models within {a.tolerance:g} -> {a.out}")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
