"""Deploy-time cost of the input normalisation: zoo exports vs keras.applications, side by side in LiteRT.

    python -m benchmarks.deploy_preprocessing --out benchmarks/results/deploy_preprocessing.json

One process builds ``--model`` (default ``mobilenet_v2_100``) at ``--input_size`` (224) with randomised weights that
give O(1) logits, and keras.applications' twin (``MobileNetV2``, ``weights=None``, its own
``include_preprocessing``-free graph that expects already normalised input) with weights of the same distribution
(a fresh init's zero biases and unit BN statistics fold into constants the converter stores once: a smaller file,
one op input fewer, that would flatter the reference by ~0.5%), and exports, per ``--modes``
(float32 and int8 with float I/O, calibrated on the same ``--calibration`` random images):

- ``keras_applications``: the reference; callers normalise outside the file (that time is not counted here);
- ``zoo_layer``: the zoo model with its ``preprocess`` layer (Rescaling → MUL + ADD over the image);
- ``zoo_fold``: the export default, normalisation folded into the stem conv + BatchNorm, border padded with the
  mean (``export.fold``): raw pixels in, exact;
- ``zoo_fold_black``: the same spec with ``input.border="black"`` (the stem sees raw 0 pixels beyond the edge, a
  choice made at training time): folded into the stem conv with no op added, exact (its parity is against the
  black-border Keras model);
- ``zoo_none``: the zoo graph without normalisation (``--preprocessing=none``): the lower bound.

Every file is timed with the ``ai_edge_litert`` interpreter (XNNPACK, ``--threads``) in ``--rounds`` interleaved
rounds of ``--runs`` invokes (``--warmup`` untimed): per round the median wall and calling-thread CPU time, and each
variant's ratio to the reference (keras.applications; ``zoo_none`` for a model without a twin) *within the round*
(the host's drift cancels); the result is the median ratio over rounds with min/max. Parity: max|Δ| of every zoo
file's logits vs the zoo Keras model on raw pixels (``zoo_none`` fed normalised pixels). The host is shared and
noisy: read ratios, not absolute milliseconds.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, spread, write_json

TWINS = {"mobilenet_v2_100": "MobileNetV2"}  # zoo name → keras.applications class (same architecture)
VARIANTS = ("keras_applications", "zoo_layer", "zoo_fold", "zoo_fold_black", "zoo_none")


def main(argv=None) -> int:
    p = harness.ArgumentParser(prog="deploy_preprocessing", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--model", default="mobilenet_v2_100",
                   help="zoo model or spec .json; with a keras.applications twin (mobilenet_v2_100) ratios are to the "
                        "twin, otherwise to zoo_none (e.g. efficientnet_lite0, whose one mean folds into one PADV2)")
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--modes", default="float32,int8", help="comma-separated, of float32,int8")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--runs", type=int, default=50, help="timed invokes per variant and round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--calibration", type=int, default=32, help="random images calibrating the int8 files")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    modes = [m for m in a.modes.split(",") if m]
    if not modes or any(m not in ("float32", "int8") for m in modes):
        print(f"deploy_preprocessing: --modes={a.modes}: of float32,int8", file=sys.stderr)
        return 2
    if a.input_size < 32 or a.rounds < 1 or a.runs < 1 or a.warmup < 0 or a.threads < 1 or a.calibration < 1:
        print("deploy_preprocessing: --input_size ≥ 32, --rounds, --runs, --threads, --calibration ≥ 1, "
              "--warmup ≥ 0", file=sys.stderr)
        return 2
    if os.path.isdir(a.out):
        print(f"deploy_preprocessing: --out={a.out}: is a directory", file=sys.stderr)
        return 2
    import zoo  # TensorFlow-free until a model is built
    try:
        spec = zoo.get_spec(a.model)
    except Exception as e:  # ZooError / SpecError: one line
        print(f"deploy_preprocessing: --model={a.model}: {e}", file=sys.stderr)
        return 2

    import keras
    import numpy as np

    from export import litert
    from export.fold import deploy_spec, fold_preprocessing
    from models.builder import build
    from models.weights import assign, randomized_weights
    from workflows.export_tflite import normalise

    t0 = time.time()
    size = a.input_size
    variants = VARIANTS if a.model in TWINS else VARIANTS[1:]
    base_name = "keras_applications" if a.model in TWINS else "zoo_none"
    keras.utils.set_random_seed(a.seed)
    model = zoo.build(a.model, input_size=size)
    assign(model, randomized_weights(model, a.seed))
    plain = build(spec, input_size=size, include_preprocessing=False)
    plain.set_weights(model.get_weights())
    black_spec = deploy_spec(spec, "fold_black")
    black = build(black_spec, input_size=size)
    black.set_weights(model.get_weights())
    models = {"zoo_layer": model, "zoo_fold": fold_preprocessing(model, spec, size),
              "zoo_fold_black": fold_preprocessing(black, black_spec, size), "zoo_none": plain}
    if a.model in TWINS:
        twin_model = getattr(keras.applications, TWINS[a.model])(
            weights=None, input_shape=(size, size, 3), classifier_activation=None)
        # the same weight distribution as the zoo files: a fresh init has zero biases and unit BN statistics, whose
        # folded constants the converter stores once (shared buffers, no FULLY_CONNECTED bias) — a smaller file
        # that would be timed against the zoo's distinct trained-like constants
        assign(twin_model, randomized_weights(twin_model, a.seed))
        models["keras_applications"] = twin_model
    rng = np.random.default_rng(a.seed)
    calib = rng.uniform(0, 255, (a.calibration, size, size, 3)).astype(np.float32)
    check = rng.uniform(0, 255, (4, size, size, 3)).astype(np.float32)
    # what each file is fed: raw pixels, or pixels normalised the way its graph expects
    feeds = {"keras_applications": lambda x: x / 127.5 - 1.0, "zoo_layer": lambda x: x, "zoo_fold": lambda x: x,
             "zoo_fold_black": lambda x: x, "zoo_none": lambda x: normalise(spec, x)}
    refs = {"mean": model.predict(check, verbose=0), "black": black.predict(check, verbose=0)}
    twin = f"keras.applications.{TWINS[a.model]}" if a.model in TWINS else None
    files, result = {}, {"setup": {"model": a.model, "keras_applications": twin, "reference": base_name,
                                   "normalisation": {"mean": list(spec.input.mean), "std": list(spec.input.std)},
                                   "input_size": size, "threads": a.threads, "rounds": a.rounds, "runs": a.runs,
                                   "warmup": a.warmup, "calibration_images": a.calibration,
                                   "int8": "full integer, float32 input/output (QUANTIZE/DEQUANTIZE at the edges)"},
                         "files": {}}
    with tempfile.TemporaryDirectory(prefix="deploy-pre-") as tmp:
        for mode in modes:
            for name in variants:
                path = os.path.join(tmp, f"{name}-{mode}.tflite")
                feed = feeds[name]

                def representative(feed=feed):
                    for x in feed(calib):
                        yield [x[None]]
                nbytes = litert.export(models[name], path, mode, representative if mode == "int8" else None)
                it = litert.interpreter(path, a.threads)
                entry = {"bytes": nbytes, "ops": litert.op_counts(path), "tensors": len(it.get_tensor_details())}
                if name != "keras_applications":
                    got = litert.predict(it, feed(check))
                    ref = refs["black" if name == "zoo_fold_black" else "mean"]
                    entry["max_abs_diff_vs_zoo_keras"] = float(np.abs(got - ref).max())
                    entry["max_abs_zoo_keras_logit"] = float(np.abs(ref).max())
                files[(mode, name)] = it
                result["files"][f"{name}/{mode}"] = entry
                print(f"{name}/{mode}: {nbytes / 1e6:.2f} MB, ops {entry['ops']}", file=sys.stderr, flush=True)
        rounds = {key: {"wall": [], "cpu": []} for key in files}
        for r in range(a.rounds):
            order = list(files) if r % 2 == 0 else list(reversed(list(files)))  # alternate the order
            for key in order:
                wall, cpu = litert.latency(files[key], a.runs, a.warmup, seed=a.seed, progress=False, cpu=True)
                rounds[key]["wall"].append(float(np.median(wall)))
                rounds[key]["cpu"].append(float(np.median(cpu)))
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
    latency = {}
    for (mode, name), v in rounds.items():
        base = rounds[(mode, base_name)]
        latency[f"{name}/{mode}"] = {
            "wall_ms": spread(v["wall"]), "thread_cpu_ms": spread(v["cpu"]),
            "wall_ratio_vs_reference": spread([x / b for x, b in zip(v["wall"], base["wall"])]),
            "cpu_ratio_vs_reference": spread([x / b for x, b in zip(v["cpu"], base["cpu"])])}
    result["latency"] = latency
    result["summary"] = {
        f"{name}/{mode}": {"cpu_ratio_median": latency[f"{name}/{mode}"]["cpu_ratio_vs_reference"]["median"],
                           "wall_ratio_median": latency[f"{name}/{mode}"]["wall_ratio_vs_reference"]["median"],
                           "thread_cpu_ms_median": statistics.median(rounds[(mode, name)]["cpu"])}
        for mode, name in rounds}
    result["host"] = host_info()
    result["seconds"] = round(time.time() - t0, 1)
    result["command"] = "python -m benchmarks.deploy_preprocessing " + " ".join(
        sys.argv[1:] if argv is None else argv)
    write_json(a.out, round_floats(result))
    for key, s in result["summary"].items():
        print(f"{key:32s} thread CPU {s['thread_cpu_ms_median']:7.3f} ms   ×{s['cpu_ratio_median']:.3f} "
              f"(wall ×{s['wall_ratio_median']:.3f}) vs {base_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
