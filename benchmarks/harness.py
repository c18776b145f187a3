"""Measurement helpers shared by benchmarks: process memory, robust statistics, host description, JSON output.

Nothing here imports TensorFlow, so a parent process that only schedules workers stays light.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -------------------------------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in KiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """Current resident set size."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def hwm_bytes() -> int | None:
    """Peak resident set size since the process started or since the last :func:`reset_hwm` (``VmHWM``)."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def reset_hwm() -> bool:
    """Resets ``VmHWM`` to the current RSS (Linux ≥ 4.0: write ``5`` to ``/proc/self/clear_refs``); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def maxrss_bytes() -> int:
    """``ru_maxrss`` of this process (lifetime peak RSS; KiB on Linux, bytes on macOS)."""
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(v if sys.platform == "darwin" else v * 1024)


# ---------------------------------------------------------------------------------------------------------- statistics
def quantile(values, q: float) -> float:
    """Linear-interpolation quantile (``numpy.percentile``'s default) of a non-empty sequence."""
    v = sorted(float(x) for x in values)
    if not v:
        raise ValueError("quantile of no values")
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def spread(values) -> dict:
    """Median, min, max, p10 and p90 of ``values``."""
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "p10": quantile(v, 0.1),
            "p90": quantile(v, 0.9), "n": len(v)}


# ---------------------------------------------------------------------------------------------------------------- host
def host_info() -> dict:
    """Platform, CPU, memory and framework versions (read from package metadata, not imported), and the load."""
    from search.tflite_timing import host, versions
    h, v = host(), versions("tensorflow", "keras", "numpy")
    try:
        mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem_total = None
    return {"platform": h["platform"], "machine": h["machine"], "cpu": h["cpu_model"], "cpu_count": h["cores"],
            "cpu_affinity": h["usable_cores"], "memory_bytes": mem_total, "python": h["python"], **v,
            "loadavg_at_start": h["loadavg"]}


def round_floats(x, digits: int = 5):
    """``x`` with every float (also inside dicts and lists) rounded to ``digits`` significant digits, for JSON.
    Integral floats (MACs and parameter counts kept as floats) stay exact."""
    if isinstance(x, float):
        return x if x.is_integer() else float(f"{x:.{digits}g}")
    if isinstance(x, dict):
        return {k: round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [round_floats(v, digits) for v in x]
    return x


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the benchmarks with the command-line contract of the recipes: a bad or missing flag is one
    stderr line ``prog: message`` and exit status 2 (argparse prints its usage block first), and an ``--out``
    result path is checked before any work: not a directory, its folder creatable, its name not too long for the
    atomic write's temp name (``common.checks.check_writable``)."""

    def error(self, message):
        usage_error(self.prog, message)

    def parse_args(self, args=None, namespace=None):
        a = super().parse_args(args, namespace)
        from common.checks import FLOAT32_MAX, is_finite32
        for name, value in vars(a).items():  # as the recipes: every float flag finite in float32 (NaN, inf, 1e39)
            if isinstance(value, float) and not is_finite32(value):
                usage_error(self.prog, f"--{name}={value}: must be a finite number within float32 range "
                                       f"(|value| <= {FLOAT32_MAX:.4g})")
        out = getattr(a, "out", None)
        if isinstance(out, str):
            from common.checks import check_writable
            from common.errors import InputError
            try:
                check_writable(out, "--out")
            except InputError as e:
                usage_error(self.prog, str(e))
        return a


def usage_error(prog: str, message: str):
    """Bad flags of an argparse benchmark: one stderr line ``prog: message`` and exit status 2."""
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(2)


# ------------------------------------------------------------------------------------------- training-step workers
def import_tf(threads: int):
    """TensorFlow with its thread pools sized before the runtime starts (``threads`` 0: TensorFlow's default)."""
    import tensorflow as tf
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def _memory_info(tf):
    try:
        return tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # needs TF_CPU_ALLOCATOR_USE_BFC=true in the worker's environment
        return None


def time_train_step(tf, step, args, warmup: int, steps: int) -> dict:
    """Traces ``step(*args)`` (a ``tf.function``), runs ``warmup`` untimed and ``steps`` timed calls, and measures:
    wall and CPU seconds per step; the allocator's peak bytes during each timed step and the bytes in use before it
    (with ``TF_CPU_ALLOCATOR_USE_BFC=true``); RSS before the first step, the RSS high-water mark after the timed steps
    (reset before the first step where ``/proc`` allows) and ``ru_maxrss``. ``loss``: the last step's output."""
    import time
    t0 = time.perf_counter()
    step.get_concrete_function(*args)  # trace outside the measured region
    trace_s = time.perf_counter() - t0
    rss0 = rss_bytes()  # model, optimizer slots, batch and traced graph exist; no step has run yet
    hwm_reset = reset_hwm()
    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        step(*args).numpy()
        if i == 0:
            first = time.perf_counter() - t0
    times, cpu_times, peaks, currents, out = [], [], [], [], None
    for _ in range(steps):
        info = _memory_info(tf)
        if info is not None:
            tf.config.experimental.reset_memory_stats("CPU:0")
            currents.append(int(_memory_info(tf)["current"]))
        c0, t0 = time.process_time(), time.perf_counter()
        out = step(*args).numpy()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        if info is not None:
            peaks.append(int(_memory_info(tf)["peak"]))
    hwm = hwm_bytes()
    return {"step_s": times, "step_cpu_s": cpu_times, "first_step_s": first, "trace_s": trace_s,
            "loss": None if out is None else float(out),
            "alloc_peak_bytes": peaks or None, "alloc_current_before_bytes": currents or None,
            "rss_before_bytes": rss0, "hwm_after_bytes": hwm if hwm_reset else None, "hwm_reset": hwm_reset,
            "maxrss_after_bytes": maxrss_bytes(),
            "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}}


def summarize_steps(rs: list[dict]) -> dict:
    """One configuration's `time_train_step` results over rounds: median step time (pooled), per-round medians and
    their spread, p10/p90, CPU time, memory by each measure (MiB)."""
    pooled = [t for r in rs for t in r["step_s"]]
    per_round = [statistics.median(r["step_s"]) for r in rs]
    peaks = [p for r in rs for p in (r["alloc_peak_bytes"] or [])]
    transient = [p - c for r in rs if r["alloc_peak_bytes"]
                 for p, c in zip(r["alloc_peak_bytes"], r["alloc_current_before_bytes"])]
    hwm = [r["hwm_after_bytes"] - r["rss_before_bytes"] for r in rs if r["hwm_after_bytes"] is not None]
    maxrss = [r["maxrss_after_bytes"] - r["rss_before_bytes"] for r in rs]
    return {
        "step_ms": 1e3 * statistics.median(pooled),
        "step_ms_per_round_median": [1e3 * t for t in per_round],
        "step_ms_round_spread": {k: (1e3 * v if k != "n" else v) for k, v in spread(per_round).items()},
        "step_ms_p10_p90_all_steps": [1e3 * quantile(pooled, 0.1), 1e3 * quantile(pooled, 0.9)],
        "step_cpu_ms": 1e3 * statistics.median(t for r in rs for t in r["step_cpu_s"]),
        "loadavg_1min_at_start": [r["loadavg_at_start"][0] if r["loadavg_at_start"] else None for r in rs],
        "alloc_peak_mib": statistics.median(peaks) / 2**20 if peaks else None,
        "alloc_peak_mib_min_max": [min(peaks) / 2**20, max(peaks) / 2**20] if peaks else None,
        "alloc_step_transient_mib": statistics.median(transient) / 2**20 if transient else None,
        "rss_hwm_growth_mib": statistics.median(hwm) / 2**20 if hwm else None,
        "rss_hwm_growth_mib_min_max": [min(hwm) / 2**20, max(hwm) / 2**20] if hwm else None,
        "ru_maxrss_growth_mib": statistics.median(maxrss) / 2**20,
        "trace_s_median": statistics.median(r["trace_s"] for r in rs),
        "first_step_s_median": (statistics.median(r["first_step_s"] for r in rs)
                                if all(r["first_step_s"] is not None for r in rs) else None),
    }


def paired_ratio(num: list[dict], den: list[dict], key: str = "step_s") -> dict | None:
    """Spread of the per-round ratio of two configurations' medians of ``key`` (rounds paired in order)."""
    rr = [statistics.median(a[key]) / statistics.median(b[key]) for a, b in zip(num, den) if a[key] and b[key]]
    return spread(rr) if rr else None


WORKER_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}


def launch_worker(module: str, args: list[str], out: str, timeout: float | None = None) -> dict:
    """Runs a benchmark's worker (``python -m module *args``, `WORKER_ENV`) that writes its JSON to ``out``;
    returns that JSON, or raises RuntimeError with the worker's last stderr line."""
    r = run_worker(module, args, env=WORKER_ENV, timeout=timeout)
    if r.returncode != 0 or not os.path.exists(out):
        tail = [line for line in r.stderr.splitlines() if line.strip()][-1:] or ["(no stderr)"]
        raise RuntimeError(f"worker {' '.join(args[:2])} failed with exit status {r.returncode}: {tail[0]}")
    with open(out) as f:
        return json.load(f)


# -------------------------------------------------------------------------------------------------------------- output
def write_json(path: str, obj) -> None:
    """Writes ``obj`` as JSON indented by 2 atomically (`common.io.write_json`)."""
    from common import io
    io.write_json(path, obj, indent=2)


def run_worker(module: str, args: list[str], env: dict | None = None, timeout: float | None = None):
    """Runs ``python -m module *args`` in a fresh process (cwd = repository root); returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    path = full_env.get("PYTHONPATH", "")
    full_env["PYTHONPATH"] = ROOT if not path else ROOT + os.pathsep + path
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          env=full_env, timeout=timeout)


class StageTimes(dict):
    """Seconds per finished stage of a resumable benchmark, kept in ``path`` so that a resumed run still reports
    the stages an earlier invocation ran; ``ran`` lists the stages run by this invocation. ``seed``: times to start
    from when ``path`` does not exist yet (e.g. the ``stage_seconds`` of a result JSON written before this file)."""

    def __init__(self, path: str, seed: dict | None = None):
        super().__init__()
        self.path, self.ran = path, []
        if os.path.exists(path):
            with open(path) as f:
                self.update(json.load(f))
        elif seed:
            self.update(seed)

    def record(self, stage: str, seconds: float) -> None:
        self[stage] = round(seconds)
        self.ran.append(stage)
        write_json(self.path, dict(self))

    @staticmethod
    def previous(out: str) -> dict:
        """``stage_seconds`` of the result JSON ``out`` when it exists (a seed for a new stage file)."""
        try:
            with open(out) as f:
                return dict(json.load(f).get("stage_seconds") or {})
        except (OSError, ValueError, AttributeError):
            return {}


class Ledger:
    """The small files that make a finished stage count as finished (a search's ``summary.json``, ``history.json``,
    ``derived.json``; a training's ``model_card.json``), mirrored from the work directory into ``root`` — a folder
    committed beside the result JSON — so that a later session, whose work directory is gone, resumes instead of
    re-running every stage. Weights and checkpoints stay in the work directory: what a benchmark reads back from a
    finished stage must be in these files. ``root=None``: a no-op."""

    def __init__(self, root: str | None, work_dir: str, setup: dict | None = None):
        """``setup``: what every stage's result depends on; the ledger keeps it in ``setup.json`` and refuses
        (ValueError) a ledger written under another one, so no stage is reused across settings."""
        self.root, self.work_dir = root, work_dir
        if root is None or setup is None:
            return
        path = os.path.join(root, "setup.json")
        setup = json.loads(json.dumps(setup))  # as JSON reads it back (tuples → lists)
        if os.path.exists(path):
            with open(path) as f:
                kept = json.load(f)
            if kept != setup:
                changed = sorted(k for k in set(kept) | set(setup) if kept.get(k) != setup.get(k))
                raise ValueError(f"{root} holds stages of other settings ({', '.join(changed)}): give another "
                                 "ledger folder")
        else:
            os.makedirs(root, exist_ok=True)
            write_json(path, setup)

    def _pairs(self, stage_dir: str, files):
        rel = os.path.relpath(stage_dir, self.work_dir)
        if rel.startswith(os.pardir):
            raise ValueError(f"{stage_dir} is not under the work directory {self.work_dir}")
        return [(os.path.join(stage_dir, f), os.path.join(self.root, rel, f)) for f in files]

    def restore(self, stage_dir: str, files) -> bool:
        """Copies the ledger's ``files`` of ``stage_dir`` into the work directory when every one is in the ledger
        and the work directory has none of them; True when it did."""
        if self.root is None:
            return False
        pairs = self._pairs(stage_dir, files)
        if not all(os.path.isfile(src) for _, src in pairs) or any(os.path.exists(dst) for dst, _ in pairs):
            return False
        import shutil
        for dst, src in pairs[::-1]:  # the file a stage's completion is judged by (the first) lands last
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst + ".ledger")
            os.replace(dst + ".ledger", dst)
        return True

    def keep(self, stage_dir: str, files) -> None:
        """Copies ``files`` of a finished stage into the ledger (each atomically)."""
        if self.root is None:
            return
        import shutil
        for src, dst in self._pairs(stage_dir, files):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)


# ------------------------------------------------------------------------------------------------ trainings and timing
def train_top1(name: str, spec_path: str, out_dir: str, log: str, seconds: "StageTimes", dataset: str, epochs: int,
               batch_size: int, lr: float, seed: int, limit: int | None = None, extra=(),
               ledger: Ledger | None = None) -> float:
    """Trains ``spec_path`` from scratch with the experiments' one schedule (``recipes.train``: SGD momentum 0.9,
    ``lr``, one warm-up epoch, cosine; validation once, at the end) unless ``out_dir`` already holds its
    ``model_card.json`` (or ``ledger`` does); records the stage's seconds and returns the card's ``val_top1``."""
    from recipes.cli import run_stage
    card = os.path.join(out_dir, "model_card.json")
    if ledger is not None:
        ledger.restore(out_dir, ["model_card.json"])
    if not os.path.exists(card):
        args = ["recipes.train", f"--model={spec_path}", "--weights=", f"--dataset={dataset}", f"--epochs={epochs}",
                f"--batch_size={batch_size}", "--optimizer=sgd", f"--lr={lr}", "--warmup_epochs=1", f"--seed={seed}",
                f"--val_freq={epochs}", "--noprogress", f"--out_dir={out_dir}",
                *([f"--limit={limit}"] if limit else []), *extra]
        seconds.record(name, run_stage(name, args, log))
    if ledger is not None:
        ledger.keep(out_dir, ["model_card.json"])
    with open(card) as f:
        return json.load(f)["metrics"]["val_top1"]


def litert_latency(specs: dict, rounds: int, runs: int = 20, clock: str = "cpu") -> dict[str, dict]:
    """Float32 LiteRT latency summaries (:func:`search.tflite_timing.summarize`, ms; one thread) of every
    :class:`~models.spec.ModelSpec` in ``specs`` (name → spec, or → .tflite bytes already converted), all timed in
    one process, interleaved rounds; ``clock``: ``"cpu"`` (the calling thread's CPU time, the latency tables' clock)
    or ``"wall"``."""
    import keras

    from models.builder import build
    from search.tflite_timing import summarize, time_chains, to_tflite
    bufs = {}
    for name, spec in specs.items():
        if isinstance(spec, bytes):
            bufs[name] = spec
            continue
        keras.backend.clear_session()
        bufs[name] = to_tflite(build(spec))
    timed = time_chains(bufs, {n: [n] for n in bufs}, threads=1, rounds=rounds, runs=runs, progress=False)
    return {n: summarize(timed[n][n][clock]) for n in bufs}


def litert_latency_ms(specs: dict, rounds: int, runs: int = 20) -> dict[str, float]:
    """The median CPU-time milliseconds of :func:`litert_latency`."""
    return {n: s["median_ms"] for n, s in litert_latency(specs, rounds, runs).items()}
