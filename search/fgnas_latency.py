"""FGNAS's latency model (paper §3.3): per condition — layer kind, input size, kernel, stride, activation and the
widths an operation does not choose — latency is an affine function of MACs, ``a + b · MACs``, fitted to LiteRT
latency measured on this host. An operation of a searched layer is one derived branch (conv block: its k×k conv → BN
→ activation; ir block: its 1×1 expansion → BN → act → k×k depthwise → BN → activation → its share of the
projection), so its MACs are ``γ_out,i · (a_i + b_i · γ_in)`` exactly as in the MACs regularizer
(:class:`search.fgnas.FgnasSupernet`), and its predicted latency is ``a_c · 1[γ_out,i > 0] + b_c · MACs_i``.
Everything the search does not change (stem, fixed blocks, pooling, concatenation, head, the invocation) is one
``fixed_ms``, calibrated on whole models.

:func:`condition_keys` names the conditions of a space; :func:`measure_points` times single-branch models of each
condition at several widths (``search.tflite_timing``: one process, interleaved rounds, the calling thread's CPU
time); :func:`fit` fits them; :meth:`AffineLatency.predict` gives an architecture's predicted latency, which
:meth:`search.fgnas.FgnasSupernet.resource` (``resource="latency"``) computes differentiably.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from models.spec import ConvSpec, MBConvSpec
from models.walk import block_site
from search.fgnas_space import FgnasSpace

FORMAT = "fgnas_latency"


@dataclasses.dataclass(frozen=True)
class AffineLatency:
    """``coefs[key] = (a_ms, b_ms_per_mac)`` per condition; ``fixed_ms`` the rest of the model; ``scale`` one factor
    on the operations' sum (calibrated on whole models: operations timed alone do not overlap, cache or fuse as in a
    whole model); ``meta`` how and where it was measured; ``points`` the measurements behind each fit."""
    coefs: dict
    fixed_ms: float
    scale: float = 1.0
    meta: dict = dataclasses.field(default_factory=dict)
    points: dict = dataclasses.field(default_factory=dict)

    def layer_coefs(self, space: FgnasSpace) -> list[list[tuple[float, float]]]:
        """``[(a, b)]`` per operation of every searched layer (KeyError names a condition not measured)."""
        out = []
        for keys in condition_keys(space):
            missing = [k for k in keys if k not in self.coefs]
            if missing:
                raise KeyError(f"latency model has no condition {missing[0]!r}: measure this space")
            out.append([tuple(self.coefs[k]) for k in keys])
        return out

    def predict(self, space: FgnasSpace, arch) -> float:
        """Predicted milliseconds of ``arch``'s derived model."""
        return self.fixed_ms + self.scale * self.ops_ms(space, arch)

    def ops_ms(self, space: FgnasSpace, arch) -> float:
        """The operations' summed per-condition latency of ``arch`` (before ``scale`` and ``fixed_ms``)."""
        terms, _, _ = space.cost_terms("macs")
        total, prev = 0.0, 0.0
        for layer, (a, b), coefs, g in zip(space.layers(), terms, self.layer_coefs(space), space.check_arch(arch)):
            gamma = np.asarray(g, np.float64).sum(axis=1)
            macs = gamma * (a + b * (prev if layer.chained else 0.0))
            total += sum(ca * (n > 0) + cb * m for (ca, cb), n, m in zip(coefs, gamma, macs))
            prev = float(gamma.sum()) if layer.kind == "conv" else 0.0
        return float(total)

    def to_json(self) -> dict:
        return {"format": FORMAT, "coefs": {k: list(v) for k, v in self.coefs.items()}, "fixed_ms": self.fixed_ms,
                "scale": self.scale, "meta": self.meta, "points": self.points}

    @classmethod
    def from_json(cls, d: dict) -> "AffineLatency":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not an FGNAS latency model (format {FORMAT!r})")
        return cls({k: tuple(v) for k, v in d["coefs"].items()}, float(d["fixed_ms"]), float(d.get("scale", 1.0)),
                   d.get("meta", {}), d.get("points", {}))

    def save(self, path: str) -> None:
        from common.io import write_json
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> "AffineLatency":
        from common.io import not_regular
        problem = not_regular(path)
        if problem:
            raise ValueError(f"{path}: {problem}")
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))


def _key(layer, k: int, act: str) -> str:
    s, b = layer.site, layer.site.block
    fixed_in = "" if layer.chained else f"|i{s.in_ch}"
    if layer.kind == "conv":
        return f"conv|n{s.in_size}|k{k}|s{b.stride}|a{act}{fixed_in}"
    return f"ir|n{s.in_size}|k{k}|s{b.stride}|a{b.act}.{act}|o{b.filters}{fixed_in}"


def condition_keys(space: FgnasSpace) -> list[list[str]]:
    """Per searched layer, the condition key of each operation."""
    return [[_key(layer, k, act) for k, act in space.ops] for layer in space.layers()]


def _branch_block(layer, k: int, act: str, width: int):
    b = layer.site.block
    if layer.kind == "conv":
        return ConvSpec(kernels=(k,), split=(width,), filters=width, stride=b.stride, act=act)
    return MBConvSpec(kernels=(k,), split=(width,), expand_channels=width, filters=b.filters, stride=b.stride,
                      act=b.act, acts=(act,), skip=False)


def measure_points(space: FgnasSpace, fractions=(0.25, 0.5, 0.75, 1.0), rounds: int = 3, runs: int = 10,
                   progress: bool = False) -> dict:
    """Times one single-branch model per condition and (input width, branch width) pair — widths at ``fractions``
    of the layer's (chained layers vary both) — in one process, interleaved. Returns ``{key: [[macs, ms], …]}``
    (ms: median CPU time of the calling thread, one LiteRT thread, minus the invocation overhead of a trivial model
    timed in the same session)."""
    import keras

    from search.tflite_timing import block_model, overhead_tflite, time_chains, to_tflite
    bufs, macs_of, seen = {"__overhead__": overhead_tflite()}, {}, set()
    for layer in space.layers():
        for k, act in space.ops:
            key = _key(layer, k, act)
            if key in seen:
                continue
            seen.add(key)
            widths = sorted({max(1, round(f * layer.channels)) for f in fractions})
            ins = (sorted({max(1, round(f * layer.site.in_ch)) for f in fractions}) if layer.chained
                   else [layer.site.in_ch])
            for cin in ins:
                for c in widths:
                    block = _branch_block(layer, k, act, c)
                    site = block_site(block, cin, layer.site.in_size)
                    keras.backend.clear_session()
                    name = f"{key}#{cin}x{c}"
                    bufs[name] = to_tflite(block_model(site, space.backbone))
                    from models.counting import block_cost
                    macs_of[name] = (key, block_cost(site).macs)
    timed = time_chains(bufs, {n: [n] for n in bufs}, threads=1, rounds=rounds, runs=runs, progress=progress)
    overhead = float(np.median(timed["__overhead__"]["__overhead__"]["cpu"]))
    points: dict = {}
    for name, (key, macs) in macs_of.items():
        points.setdefault(key, []).append([macs, float(np.median(timed[name][name]["cpu"])) - overhead])
    return points


def fit(points: dict) -> dict:
    """Least-squares ``ms = a + b · MACs`` per condition (``b`` ≥ 0; ``a`` may be any sign)."""
    coefs = {}
    for key, pts in points.items():
        p = np.asarray(pts, np.float64)
        if len(p) == 1 or np.ptp(p[:, 0]) == 0:
            # one size: a line through the origin; a time net of the invocation overhead can come out
            # slightly negative for a tiny operation, and a negative slope would reward growing it
            coefs[key] = (0.0, float(max(p[:, 1].mean(), 0.0) / max(p[:, 0].mean(), 1.0)))
            continue
        A = np.stack([np.ones(len(p)), p[:, 0]], axis=1)
        (a, b), *_ = np.linalg.lstsq(A, p[:, 1], rcond=None)
        coefs[key] = (float(a), float(max(b, 0.0)))
    return coefs


def calibrate(space: FgnasSpace, coefs: dict, archs, measured_ms) -> tuple[float, float]:
    """``(fixed_ms, scale)``: least squares ``measured = fixed + scale · Σ operations`` over calibration
    architectures (one architecture: scale 1 and the residual as ``fixed_ms``)."""
    ops_ms = np.array([AffineLatency(coefs, 0.0).ops_ms(space, a) for a in archs])
    m = np.asarray(measured_ms, np.float64)
    if len(m) < 2 or np.ptp(ops_ms) == 0:
        return float(np.median(m - ops_ms)), 1.0
    (fixed, scale), *_ = np.linalg.lstsq(np.stack([np.ones(len(m)), ops_ms], axis=1), m, rcond=None)
    return float(fixed), float(scale)


def measure_models(space: FgnasSpace, archs, rounds: int = 3, runs: int = 10, progress: bool = False) -> list[float]:
    """Median CPU-time ms of each architecture's whole derived model (float TFLite, one thread, interleaved)."""
    import keras

    from models.builder import build
    from search.tflite_timing import time_chains, to_tflite
    bufs = {}
    for i, arch in enumerate(archs):
        keras.backend.clear_session()
        bufs[f"m{i}"] = to_tflite(build(space.derive(arch, name=f"m{i}")))
    timed = time_chains(bufs, {n: [n] for n in bufs}, threads=1, rounds=rounds, runs=runs, progress=progress)
    return [float(np.median(timed[f"m{i}"][f"m{i}"]["cpu"])) for i in range(len(archs))]
