"""Latency lookup table (LUT): per-part LiteRT latencies on this host, summed to predict a whole model.

A model is cut into **parts** (:func:`parts`, one per record of :func:`models.walk.walk`): the ``stem`` (preprocess
Rescaling + stem conv [+ pool]), every block ``s{i}_b{j}`` and the ``head`` (head conv, pooling, classifier). Each
part has a canonical key (:func:`block_key`, :func:`stem_key`, :func:`head_key`; format in ``KEY_FORMAT``) naming
everything that changes its float32 TFLite graph and nothing else (BN statistics, dropout and ``bits`` do not: BN
folds into the convs, dropout is gone at inference, bits are QAT metadata). Keys hold the part's input width and
size, so a table is specific to an input resolution. A part's MACs are :mod:`models.counting`'s.

**Building** (:func:`build_table` / :func:`profile`): every spec with parts missing from the table is built with
:func:`models.builder.build` (random weights; latency does not depend on the values), converted once to float32
TFLite (:func:`to_tflite`: frozen concrete function → ``TFLiteConverter.from_concrete_functions``; the same operators
as ``from_keras_model`` without its SavedModel round trip) and the flatbuffer is **sliced** into one small model per
part (:func:`split_tflite`: the part's operators, tensors and weight buffers; its input the tensor entering the part,
its output the one leaving it). Each entry therefore runs exactly the operators the part has inside the whole model
(BN folded, activations fused), and a spec costs one conversion instead of one per block. ``method="block"`` times
one-block Keras models instead (:func:`block_model`: Input of the block's input shape → the block built by
:func:`models.builder.build_block`; same operators, a test), one conversion per distinct block.

**Timing** (:func:`time_chains`): ``ai_edge_litert.interpreter.Interpreter(num_threads=threads)`` (default XNNPACK
delegate), ``allocate_tensors``, ``warmup`` untimed invocations per model; then ``rounds`` rounds over all units in a
new random order, each unit one untimed pass and ``runs`` timed passes, every ``invoke()`` timed on its own. An entry
is the median of all its timed calls (:func:`search.tflite_timing.summarize`). Two choices, both compared by
``benchmarks/latency_model.py`` (its committed results hold the numbers):

- **chain context** (default): a spec's parts run in model order, each part's output copied into the next part's
  input outside the timed region, so the other parts' weights and activations pass through the caches in between,
  as inside the whole model. Parts timed alone, back to back (``context="isolated"``), keep their weights in cache
  and under-predict whole models.
- **CPU clock** (default with one thread): the calling thread's CPU time (``time.thread_time_ns``; with one
  interpreter thread all work runs on it). On a loaded host a long invocation is often descheduled while a short
  part rarely is, so wall-clock medians of whole models exceed the sum of their parts' medians. ``clock="wall"``
  (``perf_counter_ns``) is the default with more threads (the calling thread's CPU time would miss the pool's work).

**Invocation overhead.** Each one-part model pays the fixed cost of an ``invoke()`` that a whole model pays once.
Each session times a trivial model (one RELU on 8 floats); entries store ``ms = raw_ms − overhead_ms`` and
:meth:`LatencyTable.predict` returns ``overhead_ms + Σ part ms``. A part pays somewhat more fixed cost than the
trivial model shows, so predictions of models with many short parts lean high.

**Fallback** for a part whose key is not in the table (FGNAS-style, affine in MACs): ``ms ≈ a·MACs + b``, least
squares over the table's entries of the finest group with at least two distinct MAC values: the part's **slot group**
(:func:`slot_group`: same kind, input width and size, output width, stride, activation, SE, residual, padding — the
same position of a search space, any kernel mix or pruning), else its kind (``stem``, ``ir``, ``shuffle``, ``head``),
else all entries. :meth:`LatencyTable.explain` reports per part the key, the ms and the fit used.

The table (:meth:`LatencyTable.save` / :meth:`LatencyTable.load`) is JSON written atomically with the host (platform,
CPU model, cores, load average), the LiteRT/TensorFlow/Keras versions, threads, clock, context, warm-up, runs, rounds,
date and one record per timing session. Latencies are host-specific: :meth:`LatencyTable.compatible` refuses to
extend a table timed on another CPU or with other threads, LiteRT version, clock or context.
"""
from __future__ import annotations

import datetime
import json
import math
import re
import time
from dataclasses import dataclass

import numpy as np

from common.io import progress_bar
from models.counting import block_cost, head_cost, stem_cost
from models.spec import ConvSpec, MBConvSpec, ModelSpec, ShuffleSpec
from models.walk import Site, block_site, walk
from search.rank_metrics import mape, ranks, spearman  # noqa: F401 — validation metrics, re-exported here

# Conversion, slicing and timing live in search.tflite_timing; re-exported here as the table's public API.
from search.tflite_timing import (  # noqa: F401
    LatencyError,
    block_model,
    host,
    overhead_tflite,
    split_tflite,
    summarize,
    time_chains,
    to_tflite,
    versions,
)

TABLE_VERSION = 1
KINDS = ("stem", "ir", "shuffle", "conv", "head")
OVERHEAD = "__overhead__"
METHODS = ("slice", "block")
CLOCKS = ("cpu", "wall")
CONTEXTS = ("chain", "isolated")
FALLBACK_LEVELS = ("group", "kind", "all")
KEY_FORMAT = ("stem|c{channels}|n{size}|o{filters}|k{kernel}|s{stride}|a{act}|pool{0/1}|p{same/sym} · "
              "ir|i{in_ch}|n{in_size}|k{k}x{filters}+…|e{expand/-}|o{filters}|s{stride}|a{act}|se{se}|"
              "g{expand_groups}.{project_groups}|r{residual 0/1}|p{same/sym} · "
              "shuffle|i{in_ch}|n{in_size}|c{choice}|o{filters}|m{mid}|s{stride}|a{act}|p{same/sym} · "
              "conv|i{in_ch}|n{in_size}|k{k}x{filters}[.{act}]+…|o{filters}|s{stride}|a{act}|pool{-/max/avg}|"
              "p{same/sym} · "
              "head|i{in_ch}|n{in_size}|f{filters/-}|a{act}|cls{classes}|b{bias 0/1}")


# --------------------------------------------------------------------------------------------------------------- keys
def _pad(padding: str) -> str:
    return "sym" if padding == "symmetric" else "same"


def block_key(block, in_ch: int, in_size: int, padding: str = "same") -> str:
    """Canonical key of one block at its input ``in_ch`` × ``in_size`` × ``in_size``.

    ``ir|i{in_ch}|n{in_size}|k{k}x{c}+…|e{expand or -}|o{filters}|s{stride}|a{act}|se{se}|g{eg}.{pg}|r{0/1}|p{pad}``
    — branches in the spec's order (``k5x40+k7x20``: 40 filters at 5×5, 20 at 7×7); ``r1`` when the residual add is
    built (``skip``, stride 1, same width); ``p``: ``same`` or ``sym`` padding.
    ``shuffle|i{in_ch}|n{in_size}|c{choice}|o{filters}|m{mid}|s{stride}|a{act}|p{pad}`` for ShuffleNetV2 units,
    ``conv|i{in_ch}|n{in_size}|k{k}x{c}+…|o{filters}|s{stride}|a{act}|pool{-/max/avg}|p{pad}`` for plain conv
    blocks. A branch with its own activation (``acts``) is ``k{k}x{c}.{act}``.
    """
    pad = _pad(padding)
    if isinstance(block, ConvSpec):
        return (f"conv|i{in_ch}|n{in_size}|{_branches(block)}|o{block.filters}|s{block.stride}|a{block.act}|"
                f"pool{block.pool or '-'}|p{pad}")
    if isinstance(block, MBConvSpec):
        branches = _branches(block)
        expand = "-" if block.expand_channels is None else str(block.expand_channels)
        residual = int(block_site(block, in_ch, in_size).residual)
        return (f"ir|i{in_ch}|n{in_size}|{branches}|e{expand}|o{block.filters}|s{block.stride}|a{block.act}|"
                f"se{block.se_channels}|g{block.expand_groups}.{block.project_groups}|r{residual}|p{pad}")
    if isinstance(block, ShuffleSpec):
        return (f"shuffle|i{in_ch}|n{in_size}|c{block.choice}|o{block.filters}|m{block.mid_channels}|"
                f"s{block.stride}|a{block.act}|p{pad}")
    raise TypeError(f"block_key: not a block spec: {type(block).__name__}")


def _branches(block) -> str:
    if block.acts is None:
        return "+".join(f"k{k}x{c}" for k, c in zip(block.kernels, block.split))
    return "+".join(f"k{k}x{c}.{a}" for k, c, a in zip(block.kernels, block.split, block.acts))


def stem_key(spec: ModelSpec, size: int) -> str:
    """``stem|c{channels}|n{size}|o{filters}|k{kernel}|s{stride}|a{act}|pool{0/1}|p{pad}`` (preprocess included;
    a depthwise stem ends in ``|dw``)."""
    s = spec.stem
    return (f"stem|c{spec.input.channels}|n{size}|o{s.filters}|k{s.kernel}|s{s.stride}|a{s.act}|"
            f"pool{int(s.pool)}|p{_pad(spec.padding)}" + ("|dw" if s.depthwise else ""))


def head_key(spec: ModelSpec, in_ch: int, n: int, classes: int | None = None) -> str:
    """``head|i{in_ch}|n{n}|f{filters or -}|a{act}|cls{classes}|b{bias}`` (head conv, pooling, classifier)."""
    h = spec.head
    filters = "-" if h.filters is None else str(h.filters)
    cls = h.classes if classes is None else classes
    return f"head|i{in_ch}|n{n}|f{filters}|a{h.act}|cls{cls}|b{int(h.bias)}"


def slot_group(key: str) -> str:
    """The key without the fields a search changes in a fixed slot (kernel sizes and split, expanded width; shuffle
    choice and inner width): parts at the same position of a space share it. Stem and head keys map to their kind."""
    fields = key.split("|")
    if fields[0] == "ir":
        return "|".join(f for f in fields if not re.match(r"^(k\d|e(\d+|-)$)", f))
    if fields[0] == "conv":  # a channel search changes the branches, the width and the next block's input
        return "|".join(f for f in fields if not re.match(r"^(k\d|[io]\d+$)", f))
    if fields[0] == "shuffle":
        return "|".join(f for f in fields if not re.match(r"^(c[357x]|m\d+)$", f))
    return fields[0]


@dataclass(frozen=True)
class Part:
    """One part of a model: ``name`` is its layer-name prefix (``stem``, ``s{i}_b{j}``, ``head``)."""
    name: str
    kind: str
    key: str
    macs: int
    in_ch: int
    in_size: int
    site: Site | None = None  # where the block sits (:func:`models.walk.walk`), for block parts

    @property
    def block(self):
        """The block spec of a block part (None for the stem and the head)."""
        return None if self.site is None else self.site.block


def parts(spec: ModelSpec, input_size: int | None = None) -> list[Part]:
    """The stem, every block and the head of ``spec`` at ``input_size`` (default: the spec's), with keys and MACs
    (the :mod:`models.counting` convention: the parts' MACs sum to ``count(spec).macs``)."""
    w = walk(spec, input_size)
    out = [Part("stem", "stem", stem_key(spec, w.input_size), stem_cost(w).macs, w.stem.in_ch, w.input_size)]
    for site in w.blocks:
        out.append(Part(site.name, site.kind, block_key(site.block, site.in_ch, site.in_size, spec.padding),
                        block_cost(site).macs, site.in_ch, site.in_size, site))
    out.append(Part("head", "head", head_key(spec, w.head.in_ch, w.head.in_size), head_cost(w).macs,
                    w.head.in_ch, w.head.in_size))
    return out


# ----------------------------------------------------------------------------------------------------------- table
def _round(x, digits: int = 7):
    if isinstance(x, float) and math.isfinite(x):
        return float(f"{x:.{digits}g}")
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    return x


@dataclass
class Prediction:
    """``ms`` = ``overhead_ms`` + Σ ``parts[i]["ms"]``; ``fallback``: parts predicted by the MACs-affine fit."""
    ms: float
    overhead_ms: float
    fallback: int
    parts: list


class LatencyTable:
    """Entries ``{key: {"kind", "macs", "ms", "raw_ms", "overhead_ms", "p10_ms", "p90_ms", "n", "cpu_ms",
    "wall_ms"}}`` (``ms`` = ``raw_ms`` − the invocation overhead of its session, in the table's clock; ``cpu_ms`` /
    ``wall_ms``: raw medians in both clocks), the per-model ``overhead_ms`` and ``meta`` (host, versions, settings)."""

    def __init__(self, entries: dict | None = None, overhead_ms: float = 0.0, meta: dict | None = None,
                 calibration: dict | None = None):
        self.entries: dict[str, dict] = dict(entries or {})
        self.overhead_ms = float(overhead_ms)
        self.meta: dict = dict(meta or {})
        self.calibration: dict | None = dict(calibration) if calibration else None
        self._fit_cache = None

    def __len__(self):
        return len(self.entries)

    def __contains__(self, key):
        return key in self.entries

    def add(self, key: str, kind: str, macs: int, ms, overhead_ms: float, extra: dict | None = None) -> None:
        """Adds a part timed ``ms`` (array of milliseconds, the table's clock) in a session whose invocation
        overhead was ``overhead_ms``; ``extra`` fields (other clocks' medians) are stored as given."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        s = summarize(ms)
        self.entries[key] = {"kind": kind, "macs": int(macs), "ms": max(0.0, s["median_ms"] - overhead_ms),
                             "raw_ms": s["median_ms"], "overhead_ms": float(overhead_ms), "p10_ms": s["p10_ms"],
                             "p90_ms": s["p90_ms"], "n": s["n"], **(extra or {})}
        self._fit_cache = None

    # ----------------------------------------------------------------------------------------------------- files
    def to_json(self) -> dict:
        """The file's content; floats rounded to 7 significant digits (far below the timing noise)."""
        return _round({"format": "latency_lut", "version": TABLE_VERSION, "key_format": KEY_FORMAT,
                       "meta": self.meta, "overhead_ms": self.overhead_ms,
                       **({"calibration": self.calibration} if self.calibration else {}),
                       "entries": {k: self.entries[k] for k in sorted(self.entries)}})

    def save(self, path: str) -> None:
        """Writes the table as JSON atomically (temp file beside ``path``, then rename)."""
        from common.io import atomic_write
        data = (json.dumps(self.to_json(), indent=1) + "\n").encode()
        atomic_write(path, lambda f: f.write(data))

    @classmethod
    def from_json(cls, obj, source: str = "table") -> "LatencyTable":
        if not isinstance(obj, dict) or obj.get("format") != "latency_lut":
            raise LatencyError(f"{source}: not a latency table (no \"format\": \"latency_lut\")")
        if obj.get("version") != TABLE_VERSION:
            raise LatencyError(f"{source}: unsupported table version {obj.get('version')!r} "
                               f"(this code reads {TABLE_VERSION})")
        entries = obj.get("entries")
        if not isinstance(entries, dict):
            raise LatencyError(f"{source}: entries must be an object")
        for k, e in entries.items():
            ok = (isinstance(e, dict) and e.get("kind") in KINDS and isinstance(e.get("macs"), int)
                  and isinstance(e.get("ms"), (int, float)) and not isinstance(e.get("ms"), bool)
                  and math.isfinite(e["ms"]) and e["ms"] >= 0)
            if not ok:
                raise LatencyError(f"{source}: entries[{k!r}] needs kind in {KINDS}, integer macs and finite ms ≥ 0")
        overhead = obj.get("overhead_ms", 0.0)
        if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or not math.isfinite(overhead) \
                or overhead < 0:
            raise LatencyError(f"{source}: overhead_ms must be a finite number ≥ 0")
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise LatencyError(f"{source}: meta must be an object")
        calibration = obj.get("calibration")
        if calibration is not None:
            ok = isinstance(calibration, dict) and all(
                isinstance(calibration.get(k), (int, float)) and not isinstance(calibration.get(k), bool)
                and math.isfinite(calibration[k]) for k in ("scale", "offset_ms")) and calibration["scale"] > 0
            if not ok:
                raise LatencyError(f"{source}: calibration needs a finite scale > 0 and a finite offset_ms")
        return cls(entries, overhead, meta, calibration)

    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        from common.io import not_regular
        problem = not_regular(path)
        if problem:
            raise LatencyError(f"{path}: {problem}")
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except OSError as e:
            raise LatencyError(f"{path}: cannot read ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LatencyError(f"{path}: not valid JSON ({e})") from None
        return cls.from_json(obj, path)

    def compatible(self, threads: int, clock: str | None = None, context: str | None = None) -> str | None:
        """None when this table can be extended (or used) with these settings on this host: same CPU model, thread
        count, LiteRT version and (when given) clock and context; otherwise the reason it cannot."""
        m = self.meta
        if not m:
            return None if not self.entries else "a table without metadata"
        here = host()["cpu_model"]
        if m.get("host", {}).get("cpu_model") != here:
            return f"timed on {m.get('host', {}).get('cpu_model')!r}, not this host's {here!r}"
        if m.get("threads") != threads:
            return f"timed with {m.get('threads')} thread(s), not {threads}"
        want = versions()["ai-edge-litert"]
        if m.get("versions", {}).get("ai-edge-litert") != want:
            return f"timed with ai-edge-litert {m.get('versions', {}).get('ai-edge-litert')}, not {want}"
        for name, value in (("clock", clock), ("context", context)):
            if value is not None and m.get(name) != value:
                return f"timed with {name} {m.get(name)!r}, not {value!r}"
        return None

    # ------------------------------------------------------------------------------------------------ predicting
    def fallback_fit(self) -> dict[str, tuple[float, float, int]]:
        """``{name: (a, b, n)}``: least squares ``ms ≈ a·MACs + b`` over ``n`` entries, for every slot group
        (:func:`slot_group`) and every kind with at least two distinct MAC values, and under ``"all"`` over every
        entry (proportional when they share one MAC value)."""
        if self._fit_cache is not None:
            return self._fit_cache
        if not self.entries:
            raise LatencyError("the latency table is empty: nothing to predict or fall back on")
        groups: dict[str, list] = {"all": list(self.entries.values())}
        for key, e in self.entries.items():
            groups.setdefault(e["kind"], []).append(e)
            group = slot_group(key)
            if group != e["kind"]:
                groups.setdefault(group, []).append(e)
        fits = {}
        for name, es in groups.items():
            x = np.array([e["macs"] for e in es], np.float64)
            y = np.array([e["ms"] for e in es], np.float64)
            if len(set(x.tolist())) >= 2:
                a, b = np.polyfit(x, y, 1)
            elif name != "all":
                continue  # too few points for a line: a coarser fit serves
            elif x.sum() > 0:
                a, b = float(y.sum() / x.sum()), 0.0
            else:
                a, b = 0.0, float(y.mean())
            fits[name] = (float(a), float(b), len(es))
        self._fit_cache = fits
        return fits

    def fallback_ms(self, kind: str, macs: int, key: str | None = None, level: str = "group") -> tuple[float, str]:
        """``(max(0, a·MACs + b), fit name)`` from the finest fit available: the part's slot group (``key`` given,
        ``level="group"``), else its kind, else all entries."""
        if level not in FALLBACK_LEVELS:
            raise ValueError(f"level must be one of {FALLBACK_LEVELS}, got {level!r}")
        fits = self.fallback_fit()
        names = ([slot_group(key)] if key is not None and level == "group" else []) + \
            ([kind] if level != "all" else []) + ["all"]
        name = next(n for n in names if n in fits)
        a, b, _ = fits[name]
        return max(0.0, a * macs + b), name

    def explain(self, spec: ModelSpec, input_size: int | None = None, fallback: str = "group") -> Prediction:
        """Per-part prediction: ``parts`` = ``[{"part", "key", "kind", "macs", "ms", "source"}]``, ``source`` being
        ``"table"`` or ``"fallback:<fit>"`` (``fallback`` counts those). ``fallback``: the finest fit to use for
        unseen parts, ``"group"`` (slot group, then kind, then all), ``"kind"`` or ``"all"``."""
        rows, count_fb = [], 0
        for p in parts(spec, input_size):
            e = self.entries.get(p.key)
            if e is not None:
                ms, source = float(e["ms"]), "table"
            else:
                ms, fit = self.fallback_ms(p.kind, p.macs, p.key, fallback)
                source = f"fallback:{fit}"
                count_fb += 1
            rows.append({"part": p.name, "key": p.key, "kind": p.kind, "macs": p.macs, "ms": ms, "source": source})
        return Prediction(ms=self.overhead_ms + sum(r["ms"] for r in rows), overhead_ms=self.overhead_ms,
                          fallback=count_fb, parts=rows)

    def predict(self, spec: ModelSpec, input_size: int | None = None, fallback: str = "group") -> float:
        """Predicted milliseconds of one float32 TFLite invocation of ``spec`` (batch 1) on the table's host."""
        return self.explain(spec, input_size, fallback).ms

    def calibrated(self) -> "CalibratedTable":
        """The whole-model predictor a search steers by: ``scale · predict + offset_ms`` with the table's
        ``calibration`` (fitted on whole models timed beside the table, ``benchmarks.latency_model --calibrate``),
        the raw sum of parts when it has none."""
        return CalibratedTable(self)

    def missing(self, specs, input_size: int | None = None) -> list[Part]:
        """The distinct parts of ``specs`` whose key is not in the table (first occurrence of each key)."""
        seen, out = set(), []
        for s in specs:
            for p in parts(s, input_size):
                if p.key not in self.entries and p.key not in seen:
                    seen.add(p.key)
                    out.append(p)
        return out

    def without(self, keys) -> "LatencyTable":
        """A copy without ``keys`` (e.g. to test the fallback on parts the table has not seen); uncalibrated."""
        drop = set(keys)
        return LatencyTable({k: v for k, v in self.entries.items() if k not in drop}, self.overhead_ms, self.meta)


class CalibratedTable:
    """:meth:`LatencyTable.calibrated`: ``predict(spec)`` in whole-model milliseconds, ``scale · Σ parts +
    offset_ms``. Summing parts timed one by one misses what a whole model shares between layers (the SPOS table
    over-predicts whole ImageNet-size models by a near-constant ~2 ms, +5.5% on average); the calibration, fitted on
    whole models, removes that bias, and its leave-one-out error is the table's error as searches use it."""

    def __init__(self, table: LatencyTable):
        self.table = table
        c = table.calibration or {}
        self.scale, self.offset_ms = float(c.get("scale", 1.0)), float(c.get("offset_ms", 0.0))

    def predict(self, spec: ModelSpec, input_size: int | None = None, fallback: str = "group") -> float:
        return self.scale * self.table.predict(spec, input_size, fallback) + self.offset_ms

    def missing(self, specs, input_size: int | None = None) -> list[Part]:
        """:meth:`LatencyTable.missing` of the underlying table."""
        return self.table.missing(specs, input_size)


# ----------------------------------------------------------------------------------------------------------- build
@dataclass
class Session:
    """What :func:`profile` timed: ``table`` (extended), ``models`` (whole-model ``{name: {"cpu": summary,
    "wall": summary}}``, :func:`summarize` dicts), ``samples`` (``{context: {key: {clock: ms array}}}`` of the
    parts timed now), ``overhead`` (``{clock: ms}``), ``kinds``/``macs`` of the timed keys, ``wall_s``."""
    table: LatencyTable
    models: dict
    samples: dict
    overhead: dict
    kinds: dict
    macs: dict
    wall_s: float

    def table_for(self, clock: str, context: str = "chain") -> LatencyTable:
        """A table of only this session's parts, timed in ``context`` and read in ``clock`` (for comparisons)."""
        t = LatencyTable(overhead_ms=self.overhead[clock], meta=dict(self.table.meta, clock=clock, context=context))
        for key, by_clock in self.samples.get(context, {}).items():
            t.add(key, self.kinds[key], self.macs[key], by_clock[clock], self.overhead[clock])
        return t


def resolve_clock(clock: str, threads: int) -> str:
    if clock == "auto":
        return "cpu" if threads == 1 else "wall"
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of auto, {', '.join(CLOCKS)}; got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise ValueError("clock 'cpu' (the calling thread's CPU time) needs threads=1")
    return clock


def profile(specs, table: LatencyTable | None = None, threads: int = 1, warmup: int = 20, runs: int = 10,
            rounds: int = 5, seed: int = 0, input_size: int | None = None, method: str = "slice",
            clock: str = "auto", context: str = "chain", isolated: bool = False, measure_models: bool = False,
            progress: bool = True) -> Session:
    """Times the parts of ``specs`` missing from ``table`` (a new table when None) and adds them to it.

    Args:
        specs: :class:`~models.spec.ModelSpec` s (stem, MBConv/shuffle blocks, head).
        threads, warmup, runs, rounds, seed: timing settings (:func:`time_chains`).
        input_size: square input size of every spec (default: each spec's).
        method: ``"slice"`` (cut each spec's TFLite into parts, one conversion per spec) or ``"block"`` (one-block
            Keras models, one conversion per distinct block).
        clock: ``"cpu"`` (calling-thread CPU time; default with 1 thread), ``"wall"`` (default with more).
        context: ``"chain"``: a spec's parts run in model order, each output fed to the next part (the weights and
            activations of the other parts pass through the caches in between, as in the whole model);
            ``"isolated"``: each part alone, ``runs`` calls back to back.
        isolated: with ``context="chain"``, also time every new part alone (``Session.table_for(clock,
            "isolated")``) for comparison.
        measure_models: also time every whole spec alone, interleaved with the parts (``Session.models``).

    Raises:
        LatencyError: ``table`` was timed under other settings (:meth:`LatencyTable.compatible`), or a model cannot
            be cut into its parts.
    """
    import keras

    from models.builder import build
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    clock = resolve_clock(clock, threads)
    specs = list(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("spec names must be distinct")
    table = LatencyTable() if table is None else table
    reason = table.compatible(threads, clock, context) if len(table) else None
    if reason:
        raise LatencyError(f"cannot extend a table {reason}")
    started = time.time()
    todo = {p.key: p for p in table.missing(specs, input_size)}
    flat: dict[str, bytes] = {OVERHEAD: overhead_tflite()}
    chains: dict[str, list[str]] = {f"part:{OVERHEAD}": [OVERHEAD]}
    keras.utils.set_random_seed(seed)
    bar = progress_bar(progress, len(specs), "converting")
    for s in specs:
        ps = parts(s, input_size)
        new = [p for p in ps if p.key in todo]
        if new or measure_models:
            size = s.input.size if input_size is None else input_size
            keras.backend.clear_session()
            whole = to_tflite(build(s, input_size=size))
            if measure_models:
                flat[f"model:{s.name}"] = whole
                chains[f"model:{s.name}"] = [f"model:{s.name}"]
            if new:
                pieces = split_tflite(whole, [p.name for p in ps])
                for p in ps:
                    if p.key in flat:
                        continue
                    if method == "block" and p.kind in ("ir", "shuffle", "conv"):
                        keras.backend.clear_session()
                        flat[p.key] = to_tflite(block_model(p.site, s))
                    else:
                        flat[p.key] = pieces[p.name]
                if context == "chain":
                    chains[f"chain:{s.name}"] = [p.key for p in ps]
                for p in new:
                    if (context == "isolated" or isolated) and f"part:{p.key}" not in chains:
                        chains[f"part:{p.key}"] = [p.key]
        bar.update()
    bar.close()
    load_before = host()["loadavg"]
    raw = time_chains(flat, chains, threads=threads, warmup=warmup, runs=runs, rounds=rounds, seed=seed,
                      progress=progress)
    load_after = host()["loadavg"]
    overhead = {c: float(np.median(raw[f"part:{OVERHEAD}"][OVERHEAD][c])) for c in CLOCKS}
    samples: dict[str, dict] = {"chain": {}, "isolated": {}}
    for unit, by_key in raw.items():
        ctx = "chain" if unit.startswith("chain:") else "isolated"
        for key, by_clock in by_key.items():
            if key not in todo:
                continue
            dst = samples[ctx].setdefault(key, {c: [] for c in CLOCKS})
            for c in CLOCKS:
                dst[c].append(by_clock[c])
    samples = {ctx: {k: {c: np.concatenate(v[c]) for c in CLOCKS} for k, v in d.items()} for ctx, d in samples.items()}
    for key, by_clock in samples[context].items():
        p = todo[key]
        table.add(key, p.kind, p.macs, by_clock[clock], overhead[clock],
                  extra={f"{c}_ms": float(np.median(by_clock[c])) for c in CLOCKS})
    table.overhead_ms = overhead[clock]
    meta = dict(table.meta)
    meta.update(threads=threads, clock=clock, context=context, method=method, warmup=warmup, runs_per_round=runs,
                rounds=rounds, runtime="ai_edge_litert.interpreter.Interpreter (default XNNPACK delegate), float32, "
                                    "batch 1",
                statistic="median of the part's timed invoke() calls (rounds × runs, pooled over the specs it "
                          "appeared in), minus the session's invocation overhead",
                host=host(), versions=versions(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    sessions = list(meta.get("sessions", []))
    sessions.append({"date": meta["date"], "timed_parts": len(samples[context]), "timed_models": len(names)
                     if measure_models else 0, "overhead_ms": overhead, "loadavg_before": load_before,
                     "loadavg_after": load_after, "seconds": round(time.time() - started, 1)})
    meta["sessions"] = sessions
    table.meta = meta
    models = {}
    for unit, by_key in raw.items():
        if unit.startswith("model:"):
            name = unit.split(":", 1)[1]
            models[name] = {c: summarize(by_key[unit][c]) for c in CLOCKS}
    return Session(table=table, models=models, samples=samples, overhead=overhead,
                   kinds={k: todo[k].kind for k in todo}, macs={k: todo[k].macs for k in todo},
                   wall_s=time.time() - started)


def build_table(specs, threads: int = 1, warmup: int = 20, runs: int = 10, rounds: int = 5, seed: int = 0,
                table: LatencyTable | None = None, input_size: int | None = None, method: str = "slice",
                clock: str = "auto", context: str = "chain", progress: bool = True) -> LatencyTable:
    """The latency table of every distinct part (stem, blocks, head) of ``specs``, extending ``table`` if given
    (parts already in it are not timed again). See :func:`profile`."""
    return profile(specs, table, threads=threads, warmup=warmup, runs=runs, rounds=rounds, seed=seed,
                   input_size=input_size, method=method, clock=clock, context=context, progress=progress).table
