"""Latency of a ``.tflite`` (or of a zoo model, exported float32 first) with the LiteRT interpreter on this host.

    python -m recipes.benchmark_latency --model=runs/export/efficientnet_lite0-int8.tflite
    python -m recipes.benchmark_latency --model=mixnet_s --threads=4 --json=runs/latency/mixnet_s-t4.json

Mobile-style defaults: one thread, batch 1, XNNPACK (the interpreter's default delegate). After ``--warmup``
untimed invocations, ``--runs`` invocations are timed one by one (``time.perf_counter_ns`` around ``invoke()``) on a
fixed-seed random input of the input's dtype (0–255 for float inputs); prints median/p10/p90 and writes a JSON with
the statistics, every run's time, the file, its input and the host (platform, CPU model, cores) and versions.

A zoo name or spec path is built with random initial weights (latency does not depend on the values) at
``--input_size`` (default: the spec's) and exported float32 to a temporary file; for other modes export with
``recipes.export_tflite`` and pass the ``.tflite``.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile

from absl import flags

from recipes._cli import UsageError, run

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A .tflite file, or a zoo model name / spec .json path (exported float32 to a "
                                   "temporary .tflite first).")
flags.DEFINE_integer("threads", 1, "Interpreter threads (mobile-style default: 1).", lower_bound=1)
flags.DEFINE_integer("warmup", 20, "Untimed invocations before timing (default 20; fewer only for quick checks).",
                     lower_bound=0)
flags.DEFINE_integer("runs", 200, "Timed invocations.", lower_bound=1)
flags.DEFINE_string("json", None, "Path of the JSON result (default: runs/latency/<model>-t<threads>.json).")
flags.DEFINE_integer("input_size", None, "Square input size: build size of a zoo model (default: the spec's); for a "
                                         ".tflite only when its height/width are dynamic, else it must match.",
                     lower_bound=8)
flags.DEFINE_integer("seed", 0, "Seed of the random input.")
flags.mark_flag_as_required("model")


def _resolve(model: str):
    """``(tflite path or None, spec or None)`` after checking the flag (no TensorFlow)."""
    import zoo
    from export import litert
    if model.endswith(".tflite") or (os.path.isfile(model) and litert.is_tflite(model)):
        litert.check_tflite(model)
        return model, None
    if os.path.isfile(model) and not model.endswith(".json"):
        raise UsageError(f"--model {model}: neither a .tflite file nor a spec .json")
    return None, zoo.get_spec(model)


def _check_size(path: str, size: int | None) -> list[int] | None:
    """The input shape to resize a ``.tflite`` to (batch 1) for ``--input_size``, or None to keep the file's;
    refuses a size the file cannot take (read from the flatbuffer, before any interpreter exists)."""
    from export import litert
    if size is None:
        return None
    try:
        inputs = litert.input_shapes(path)
    except Exception as e:  # a corrupt flatbuffer behind a valid identifier
        raise UsageError(f"--model {path}: unreadable TFLite file ({e})") from None
    if len(inputs) != 1 or len(inputs[0]["shape"]) != 4:
        raise UsageError(f"--input_size: {path} does not have one image input (NHWC)")
    shape, signature = inputs[0]["shape"], inputs[0]["shape_signature"]
    if shape[1:3] == [size, size]:
        return None
    if signature[1] != -1 or signature[2] != -1:
        raise UsageError(f"--input_size {size}: {path} has a fixed input size of {shape[1]}×{shape[2]}")
    return [1, size, size, shape[3]]


def main(argv):
    from common.io import atomic_write
    from export import litert
    from models.counting import count
    from search import tflite_timing
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    path, spec = _resolve(FLAGS.model)
    if spec is not None:
        count(spec, FLAGS.input_size)  # SpecError if the input size does not fit the network
    resize = _check_size(path, FLAGS.input_size) if path else None
    stem = os.path.splitext(os.path.basename(path))[0] if path else spec.name
    out = FLAGS.json or os.path.join("runs", "latency", f"{stem}-t{FLAGS.threads}.json")
    litert.check_writable(out, "--json")

    source = None
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        if spec is not None:
            from models.builder import build
            size = FLAGS.input_size or spec.input.size
            path = os.path.join(tmp, f"{spec.name}.tflite")
            print(f"exporting {spec.name} at {size}×{size} (float32, random init) …", flush=True)
            litert.export(build(spec, input_size=size), path, "float32")
            source = {"zoo_model": spec.name, "spec": FLAGS.model, "input_size": size, "mode": "float32",
                      "weights": None}
        nbytes = os.path.getsize(path)
        try:
            it = litert.interpreter(path, FLAGS.threads)
        except (ValueError, RuntimeError) as e:
            raise UsageError(f"--model {path}: LiteRT cannot load it: {str(e).splitlines()[0]}") from None
        if resize:
            it.resize_tensor_input(it.get_input_details()[0]["index"], resize)
            it.allocate_tensors()
        ops = litert.op_counts(path)
        io = litert.io_details(it)
        times = litert.latency(it, FLAGS.runs, FLAGS.warmup, seed=FLAGS.seed)
    stats = litert.summarize(times)
    host = tflite_timing.host()
    result = {**stats, "runs": FLAGS.runs, "warmup": FLAGS.warmup, "threads": FLAGS.threads,
              "model": FLAGS.model, "tflite": None if source else os.path.abspath(path), "exported_from": source,
              "file_bytes": nbytes, "input_shape": io["input"]["shape"], "input_dtype": io["input"]["dtype"],
              "io": io, "ops": sorted(ops), "delegate": "XNNPACK (interpreter default)", "seed": FLAGS.seed,
              "host": host, "litert_version": tflite_timing.versions("ai-edge-litert")["ai-edge-litert"],
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "times_ms": [round(float(t), 5) for t in times]}
    atomic_write(out, lambda f: f.write(json.dumps(result, indent=1).encode()))

    print(f"{'model':8s} {FLAGS.model} ({nbytes / 1e3:,.1f} kB), input {io['input']['dtype']} {io['input']['shape']}")
    print(f"{'host':8s} {host['cpu_model']}, {host['usable_cores']} cores; LiteRT {result['litert_version']}, "
          f"{FLAGS.threads} thread{'s' if FLAGS.threads > 1 else ''}")
    print(f"{'latency':8s} median {stats['median_ms']:.3f} ms, p10 {stats['p10_ms']:.3f}, p90 {stats['p90_ms']:.3f}, "
          f"mean {stats['mean_ms']:.3f}, min {stats['min_ms']:.3f} ({FLAGS.runs} runs after {FLAGS.warmup} warm-up)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run(main)
