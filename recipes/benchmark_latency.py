"""Latency of a ``.tflite`` (or of a zoo model, exported float32 first) with the LiteRT interpreter on this host.

    python -m recipes.benchmark_latency --model=runs/export/efficientnet_lite0-imagenet-int8.tflite
    python -m recipes.benchmark_latency --model=mixnet_s --threads=4 --json=runs/latency/mixnet_s-t4.json

Mobile-style defaults: one thread, batch 1, XNNPACK (the interpreter's default delegate). After ``--warmup``
untimed invocations, ``--runs`` invocations are timed one by one (``time.perf_counter_ns`` around ``invoke()``) on a
fixed-seed random input of the input's dtype (0–255 for float inputs); prints median/p10/p90 and writes a JSON with
the statistics, every run's time, the file, its input and the host (platform, CPU model, cores) and versions.

Two clocks, both reported: **wall** (``time.perf_counter_ns``; the ``*_ms`` fields: what a user waits) and the
calling thread's **CPU time** (``time.thread_time_ns``; ``thread_cpu``: the clock of the search's latency lookup
tables, immune to other processes' load but blind to the other threads' work when ``--threads`` > 1).

A zoo name or spec path is built with random initial weights (latency does not depend on the values) at
``--input_size`` (default: the spec's) and exported float32 to a temporary file; for other modes export with
``recipes.export_tflite`` and pass the ``.tflite``.
"""
from __future__ import annotations

import dataclasses

from absl import flags

from recipes.cli import UsageError, run
from workflows import benchmark_latency
from workflows.benchmark_latency import LatencyConfig

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


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = LatencyConfig(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(LatencyConfig)})
    result = benchmark_latency.run(config)
    r, threads = result.report, config.threads
    io, host = r["io"], r["host"]
    print(f"{'model':8s} {config.model} ({r['file_bytes'] / 1e3:,.1f} kB), input {io['input']['dtype']} "
          f"{io['input']['shape']}")
    print(f"{'host':8s} {host['cpu_model']}, {host['usable_cores']} cores; LiteRT {r['litert_version']}, "
          f"{threads} thread{'s' if threads > 1 else ''}")
    print(f"{'latency':8s} median {r['median_ms']:.3f} ms, p10 {r['p10_ms']:.3f}, p90 {r['p90_ms']:.3f}, "
          f"mean {r['mean_ms']:.3f}, min {r['min_ms']:.3f} ({config.runs} runs after {config.warmup} warm-up; wall "
          f"clock)")
    c = r["thread_cpu"]
    print(f"{'cpu':8s} median {c['median_ms']:.3f} ms, p10 {c['p10_ms']:.3f}, p90 {c['p90_ms']:.3f} (CPU time of the "
          f"calling thread, the latency tables' clock{'; the other threads are not in it' if threads > 1 else ''})")
    print(f"wrote {result.json}")
    return 0


if __name__ == "__main__":
    run(main)
