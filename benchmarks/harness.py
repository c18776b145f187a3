"""Measurement helpers shared by benchmarks: process memory, robust statistics, host description, JSON output.

Nothing here imports TensorFlow, so a parent process that only schedules workers stays light.
"""
from __future__ import annotations

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


def usage_error(prog: str, message: str):
    """Bad flags of an argparse benchmark: one stderr line ``prog: message`` and exit status 2."""
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(2)


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
