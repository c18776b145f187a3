"""Latency of a ``.tflite`` (or of a zoo model, exported float32 first) with the LiteRT interpreter on this host
(``python -m recipes.benchmark_latency``): the config, its TensorFlow-free validation, and the run (timing in
`export.litert`). Writes a JSON with the statistics, every run's time, the file, its input, the host and versions.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import tempfile

from common.checks import ConfigError, check_at_least, check_writable


@dataclasses.dataclass(frozen=True)
class LatencyConfig:
    """One latency measurement; the fields are the flags of ``recipes.benchmark_latency``."""

    model: str
    threads: int = 1
    warmup: int = 20
    runs: int = 200
    json: str | None = None
    input_size: int | None = None
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class LatencyPlan:
    path: str | None  # the .tflite, or None for a spec exported first
    spec: object | None
    resize: list[int] | None
    out: str


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    report: dict  # as written to ``json``: statistics (median_ms, p10_ms, …), file, io, host, times
    json: str


def _resolve(model: str):
    """``(tflite path or None, spec or None)`` after checking the flag (no TensorFlow)."""
    import zoo
    from export import litert
    if model.endswith(".tflite") or (os.path.isfile(model) and litert.is_tflite(model)):
        litert.check_tflite(model)
        return model, None
    if os.path.isfile(model) and not model.endswith(".json"):
        raise ConfigError(f"--model {model}: neither a .tflite file nor a spec .json")
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
        raise ConfigError(f"--model {path}: unreadable TFLite file ({e})") from None
    if len(inputs) != 1 or len(inputs[0]["shape"]) != 4:
        raise ConfigError(f"--input_size: {path} does not have one image input (NHWC)")
    shape, signature = inputs[0]["shape"], inputs[0]["shape_signature"]
    if shape[1:3] == [size, size]:
        return None
    if signature[1] != -1 or signature[2] != -1:
        raise ConfigError(f"--input_size {size}: {path} has a fixed input size of {shape[1]}×{shape[2]}")
    return [1, size, size, shape[3]]


def validate(config: LatencyConfig) -> LatencyPlan:
    """Everything checkable without TensorFlow.

    Raises:
        InputError (subclasses): a bad value, named by its flag.
    """
    from models.counting import count

    check_at_least(threads=(config.threads, 1), warmup=(config.warmup, 0), runs=(config.runs, 1),
                   input_size=(config.input_size, 8))
    path, spec = _resolve(config.model)
    if spec is not None:
        count(spec, config.input_size)  # SpecError if the input size does not fit the network
    resize = _check_size(path, config.input_size) if path else None
    stem = os.path.splitext(os.path.basename(path))[0] if path else spec.name
    out = config.json or os.path.join("runs", "latency", f"{stem}-t{config.threads}.json")
    check_writable(out, "--json", model=path or config.model)
    return LatencyPlan(path, spec, resize, out)


def run(config: LatencyConfig) -> LatencyResult:
    """Validates ``config`` (before TensorFlow is imported), exports a spec to a temporary float32 ``.tflite`` when
    needed, times ``runs`` invocations after ``warmup`` and writes the JSON."""
    plan = validate(config)
    from common.io import write_json
    from export import litert
    from search import tflite_timing

    path, spec, source = plan.path, plan.spec, None
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        if spec is not None:
            from models.builder import build
            size = config.input_size or spec.input.size
            path = os.path.join(tmp, f"{spec.name}.tflite")
            print(f"exporting {spec.name} at {size}×{size} (float32, random init) …", flush=True)
            litert.export(build(spec, input_size=size), path, "float32")
            source = {"zoo_model": spec.name, "spec": config.model, "input_size": size, "mode": "float32",
                      "weights": None}
        nbytes = os.path.getsize(path)
        try:
            it = litert.interpreter(path, config.threads)
        except (ValueError, RuntimeError) as e:
            raise ConfigError(f"--model {path}: LiteRT cannot load it: {str(e).splitlines()[0]}") from None
        if plan.resize:
            it.resize_tensor_input(it.get_input_details()[0]["index"], plan.resize)
            it.allocate_tensors()
        ops = litert.op_counts(path)
        io = litert.io_details(it)
        times, cpu_times = litert.latency(it, config.runs, config.warmup, seed=config.seed, cpu=True)
    stats = litert.summarize(times)
    result = {**stats, "clock": "wall (time.perf_counter_ns around invoke(); the *_ms fields and times_ms)",
              "thread_cpu": {**litert.summarize(cpu_times), "clock": (
                  "CPU time of the calling thread (time.thread_time_ns), the clock of the latency lookup tables: "
                  "with --threads=1 it is the work of the invoke without waits; with more threads the other "
                  "threads' work is not in it")},
              "runs": config.runs, "warmup": config.warmup, "threads": config.threads,
              "model": config.model, "tflite": None if source else os.path.abspath(path), "exported_from": source,
              "file_bytes": nbytes, "input_shape": io["input"]["shape"], "input_dtype": io["input"]["dtype"],
              "io": io, "ops": sorted(ops), "delegate": "XNNPACK (interpreter default)", "seed": config.seed,
              "host": tflite_timing.host(),
              "litert_version": tflite_timing.versions("ai-edge-litert")["ai-edge-litert"],
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "times_ms": [round(float(t), 5) for t in times]}
    write_json(plan.out, result)
    return LatencyResult(result, plan.out)
