"""E-DNAS's latency-table loss (García López et al., Eq. 11–13) for the meta-kernel search: a per-filter latency
table of a :class:`search.metakernel_space.SearchSpace`, its exact sum for an architecture and its expectation under
the architecture probabilities (FBNet-style Σ P · LAT), differentiable in α.

**The table.** The project's LUT (:mod:`search.latency`) times whole blocks, one entry per exact kernel mix; a
per-filter search needs the latency of every (block, filter, kernel) choice. Per searchable block (slot) ``s``:

    LAT_s(n) = base_s + Σ_k a_{s,k} · n_k + c_s · (B − 1)

``n_k`` filters at kernel ``k`` (pruned filters count nowhere: the expansion conv, depthwise conv and projection
lose that channel), ``B`` the number of kernel sizes present (each extra branch is one more depthwise op plus its
share of the split/concatenation). ``a_{s,k}`` is the per-filter entry of choice ``k`` at slot ``s`` (its
expansion-output channel, its ``k×k`` depthwise filter and its projection input row, all at the slot's sizes); "None"
costs 0. The coefficients are fitted by non-negative least squares (:func:`fit`) to block latencies of random
derived architectures measured with LiteRT by :func:`search.latency.profile` (parts sliced from whole models, chain
context, the calling thread's CPU time). Everything the search does not change (stem, head, the invocation) is
``fixed_ms``; :func:`calibrate` fits ``fixed_ms`` and one ``scale`` on the blocks' sum to whole models measured alone
(parts timed in a chain still overlap and cache differently from one whole invocation).

**The loss.** For choice probabilities ``p`` (rows × choices, "None" first where the block may prune):
``E[n_k] = Σ_rows p_k`` and ``E[B] = Σ_k (1 − Π_rows (1 − p_k))`` (the probability that kernel ``k`` is present,
filters chosen independently), so :meth:`KernelLatency.expected_ms` equals :meth:`KernelLatency.predict` exactly for
one-hot ``p``. The search steers ``E[LAT]`` into the band ``T(1 ± η)`` with the same barrier as the FLOPs loss
(:func:`search.differentiable.cost_loss`, the paper's Eq. 12 budget; its ±log form makes λ unit-free, so λ plays
Eq. 13's β).

Architectures are :meth:`search.supernet.MetaKernelSupernet.choices` arrays: per block one int per α row, 0 = "None"
and ``i + 1`` = candidate ``i`` where the block may prune (rows = filters), else the candidate index (one row: the
block chooses one kernel for every filter).
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from common.checks import FLOAT32_MAX
from models.spec import ModelSpec
from search.metakernel_space import SearchSpace

FORMAT = "kernel_latency"
VERSION = 1


def prunable(slot) -> bool:
    """Whether a slot's filters choose individually, "None" included (blocks with an expansion conv; the supernet's
    ``allow_none`` / ``per_filter``)."""
    return slot.expand is not None


def slot_counts(space: SearchSpace, arch) -> list[np.ndarray]:
    """Filters per candidate kernel (``len(space.candidates)`` ints) of every block of ``arch``."""
    slots, cands = space.blocks(), len(space.candidates)
    if len(arch) != len(slots):
        raise ValueError(f"architecture has {len(arch)} blocks, space {space.name!r} {len(slots)}")
    out = []
    for slot, choice in zip(slots, arch):
        c = np.asarray(choice, np.int64).reshape(-1)
        if prunable(slot):
            if c.size != slot.expand or c.min() < 0 or c.max() > cands:
                raise ValueError(f"{slot.name}: need {slot.expand} choices in 0..{cands}")
            out.append(np.bincount(c, minlength=cands + 1)[1:])
        else:
            if c.size != 1 or not 0 <= c[0] < cands:
                raise ValueError(f"{slot.name}: need one choice in 0..{cands - 1}")
            n = np.zeros(cands, np.int64)
            n[c[0]] = slot.in_ch
            out.append(n)
    return out


def arch_spec(space: SearchSpace, arch, name: str = "arch") -> ModelSpec:
    """``arch`` as a zoo spec, as :meth:`search.supernet.MetaKernelSupernet.derive` writes it (no TensorFlow)."""
    stages: dict[int, list] = {}
    for slot, n in zip(space.blocks(), slot_counts(space, arch)):
        if not n.any():
            raise ValueError(f"{slot.name}: every filter pruned (a block keeps at least one)")
        keep = np.flatnonzero(n)
        stages.setdefault(slot.stage, []).append(slot.spec([space.candidates[i] for i in keep], n[keep]))
    return space.assemble(tuple(tuple(b) for b in stages.values()), name)


def arch_of(space: SearchSpace, spec: ModelSpec) -> list[np.ndarray]:
    """The architecture (choice arrays) of a derived spec of ``space`` (the inverse of :func:`arch_spec`; pruned
    filters last)."""
    blocks = [b for _, _, b in spec.blocks()]
    slots = space.blocks()
    if len(blocks) != len(slots):
        raise ValueError(f"spec {spec.name!r} has {len(blocks)} blocks, space {space.name!r} {len(slots)}")
    cands, arch = list(space.candidates), []
    for slot, b in zip(slots, blocks):
        idx = [cands.index(k) for k in b.kernels]
        if not prunable(slot):
            arch.append(np.array([idx[0]]))
            continue
        c = np.concatenate([np.full(n, 1 + i) for i, n in zip(idx, b.split)])
        arch.append(np.concatenate([c, np.zeros(slot.expand - c.size, np.int64)]))
    return arch


def sample_arch(space: SearchSpace, rng: np.random.Generator) -> list[np.ndarray]:
    """A random architecture spread over what a search visits and what it ends at: a keep level per architecture
    (U(0.15, 1), ± 0.15 per block, so some blocks keep every filter); per block, how many kernel sizes it uses
    (1 … all, uniform: a search's argmax often leaves one or two), which ones, and their probabilities from a flat
    Dirichlet; every filter drawn independently; a block keeps at least one filter."""
    cands = len(space.candidates)
    level = rng.uniform(0.15, 1.0)
    arch = []
    for slot in space.blocks():
        used = rng.choice(cands, size=int(rng.integers(1, cands + 1)), replace=False)
        q = np.zeros(cands)
        q[used] = rng.dirichlet(np.ones(len(used)))
        if not prunable(slot):
            arch.append(np.array([rng.choice(cands, p=q)]))
            continue
        keep = float(np.clip(level + rng.uniform(-0.15, 0.15), 0.05, 1.0))
        c = np.where(rng.random(slot.expand) < keep, 1 + rng.choice(cands, size=slot.expand, p=q), 0)
        if not c.any():
            c[rng.integers(slot.expand)] = 1 + rng.choice(cands, p=q)
        arch.append(c)
    return arch


def uniform_arch(space: SearchSpace, k: int) -> list[np.ndarray]:
    """Every filter of every block at kernel ``k``, nothing pruned (a search's reference network)."""
    i = list(space.candidates).index(k)
    return [np.array([i]) if not prunable(slot) else np.full(slot.expand, i + 1) for slot in space.blocks()]


@dataclasses.dataclass(frozen=True)
class SlotLatency:
    """One block's coefficients (milliseconds): ``base`` + Σ ``per_filter[k]`` · n_k + ``branch`` · (B − 1);
    ``shared``: the width of a block whose filters share one choice (0: every filter chooses)."""
    name: str
    base: float
    per_filter: tuple[float, ...]
    branch: float
    shared: int = 0

    def ms(self, n) -> float:
        n = np.asarray(n, np.float64)
        return self.base + float(np.dot(self.per_filter, n)) + self.branch * (int(np.count_nonzero(n)) - 1)


@dataclasses.dataclass(frozen=True)
class KernelLatency:
    """The per-filter latency table of one space (see the module docstring): ``predict = fixed_ms + scale · Σ_s
    LAT_s``; ``meta`` how and where it was measured, ``fit`` the per-slot fit residuals."""
    space: str
    input_size: int
    candidates: tuple[int, ...]
    slots: tuple[SlotLatency, ...]
    fixed_ms: float
    scale: float = 1.0
    meta: dict = dataclasses.field(default_factory=dict)
    fit: dict = dataclasses.field(default_factory=dict)

    def check(self, space: SearchSpace) -> None:
        """Raises ValueError naming what differs when the table was not measured for ``space``."""
        names = [s.name for s in space.blocks()]
        if space.name != self.space:
            raise ValueError(f"latency table was measured for space {self.space!r}, the search is {space.name!r}")
        if tuple(space.candidates) != tuple(self.candidates):
            raise ValueError(f"latency table has candidates {list(self.candidates)}, the search "
                             f"{list(space.candidates)}")
        if space.input_size != self.input_size:
            raise ValueError(f"latency table was measured at input size {self.input_size}, the search counts "
                             f"{space.input_size}")
        if names != [s.name for s in self.slots]:
            raise ValueError(f"latency table has blocks {[s.name for s in self.slots]}, the space {names}")

    def slots_ms(self, space: SearchSpace, arch) -> float:
        """Σ_s LAT_s of ``arch`` (before ``scale`` and ``fixed_ms``)."""
        return float(sum(s.ms(n) for s, n in zip(self.slots, slot_counts(space, arch))))

    def predict(self, space: SearchSpace, arch) -> float:
        """The table's exact sum for ``arch``: predicted milliseconds of its derived model."""
        return self.fixed_ms + self.scale * self.slots_ms(space, arch)

    def reach(self, space: SearchSpace) -> tuple[float, float]:
        """(least, most) predicted milliseconds over ``space``'s architectures: one filter per block at its cheapest
        kernel (a block without "None" keeps every filter), and every filter at its dearest kernel with every
        kernel size present (an upper bound)."""
        lo = hi = 0.0
        for s, slot in zip(self.slots, space.blocks()):
            width = s.shared or slot.expand
            lo += s.base + min(s.per_filter) * (s.shared or 1)
            hi += s.base + max(s.per_filter) * width + s.branch * (min(width, len(self.candidates)) - 1)
        return self.fixed_ms + self.scale * lo, self.fixed_ms + self.scale * hi

    def choice_costs(self, space: SearchSpace) -> list[np.ndarray]:
        """Per block, the milliseconds each choice of each α row adds (rows × choices, "None" first and 0 where the
        block may prune; one row holding the whole block's width where its filters share one choice), after
        ``scale``; the extra-branch term is not per row and is left out."""
        out = []
        for s, slot in zip(self.slots, space.blocks()):
            a = self.scale * np.asarray(s.per_filter, np.float64)
            out.append((s.shared * a)[None, :] if s.shared else np.tile(np.concatenate([[0.0], a]), (slot.expand, 1)))
        return out

    def move_costs(self, space: SearchSpace, arch, block: int | None = None):
        """Per block, the exact change of :meth:`predict` (ms, after ``scale``) when one α row of ``arch`` moves to
        each choice (rows × choices, the layout of :meth:`choice_costs`): unlike ``choice_costs`` it includes the
        extra-branch term, which changes when a move empties a kernel size or starts one. A move's cost depends only
        on (the row's current choice, the new one) and the block's counts, so each block costs one small table.
        ``block``: only that block's matrix."""
        counts = slot_counts(space, arch)
        if block is not None:
            return self._move_costs(self.slots[block], counts[block], arch[block])
        return [self._move_costs(s, n, c) for s, n, c in zip(self.slots, counts, arch)]

    def _move_costs(self, s: SlotLatency, n: np.ndarray, c) -> np.ndarray:
        c = np.asarray(c, np.int64).reshape(-1)
        if s.shared:  # one row for the whole block, one branch whatever the choice
            a = self.scale * s.shared * np.asarray(s.per_filter, np.float64)
            return (a - a[c[0]])[None, :]
        here, k = s.ms(n), len(n)
        table = np.zeros((k + 1, k + 1))  # [current choice, new choice], "None" = 0
        for u in range(k + 1):
            for j in range(k + 1):
                m = n.copy()
                if u:
                    m[u - 1] -= 1
                if j:
                    m[j - 1] += 1
                table[u, j] = self.scale * (s.ms(m) - here) if m.min() >= 0 else 0.0
        return table[c]

    def expected_ms(self, probs):
        """E[LAT] (a Keras tensor, differentiable) for per-block choice probabilities ``probs`` (rows × choices,
        "None" first where the block may prune; a shared row stands for every filter of its block)."""
        from keras import ops
        total = ops.convert_to_tensor(0.0)
        for s, p in zip(self.slots, probs):
            q = p[:, -len(self.candidates):]  # the kernel choices ("None" costs nothing)
            a = ops.convert_to_tensor(np.asarray(s.per_filter, np.float32))
            if s.shared:  # one choice for the whole block: n_k = width · q_k, one branch
                total = total + s.base + s.shared * ops.sum(q[0] * a)
                continue
            present = 1.0 - ops.exp(ops.sum(ops.log(ops.maximum(1.0 - q, 1e-12)), axis=0))
            total = total + s.base + ops.sum(ops.sum(q, axis=0) * a) + s.branch * (ops.sum(present) - 1.0)
        return self.fixed_ms + self.scale * total

    # ------------------------------------------------------------------------------------------------------ files
    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "space": self.space, "input_size": self.input_size,
                "candidates": list(self.candidates), "fixed_ms": self.fixed_ms, "scale": self.scale,
                "slots": [dataclasses.asdict(s) | {"per_filter": list(s.per_filter)} for s in self.slots],
                "meta": self.meta, "fit": self.fit}

    def save(self, path: str) -> None:
        from common.io import atomic_write
        data = (json.dumps(self.to_json(), indent=1) + "\n").encode()
        atomic_write(path, lambda f: f.write(data))

    @classmethod
    def from_json(cls, obj, source: str = "latency table") -> "KernelLatency":
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(f"{source}: not a per-filter latency table (no \"format\": \"{FORMAT}\"; "
                             "python -m benchmarks.ednas_latency writes one)")
        if obj.get("version") != VERSION:
            raise ValueError(f"{source}: unsupported version {obj.get('version')!r} (this code reads {VERSION})")
        try:
            cands = tuple(_integer(k, "candidates[]", 1) for k in _array(obj["candidates"], "candidates"))
            if not cands or len(set(cands)) != len(cands):
                raise ValueError("\"candidates\" must be distinct kernel sizes, at least one")
            slots = []
            for i, s in enumerate(_array(obj["slots"], "slots")):
                where = f"slots[{i}]"
                if not isinstance(s, dict):
                    raise ValueError(f"{where} is not an object")
                per = tuple(_number(v, f"{where}.per_filter[]", 0.0)
                            for v in _array(s["per_filter"], f"{where}.per_filter"))
                if len(per) != len(cands):
                    raise ValueError(f"{where}.per_filter has {len(per)} values for {len(cands)} candidates")
                if not isinstance(s["name"], str):
                    raise ValueError(f"{where}.name is not a string")
                slots.append(SlotLatency(s["name"], _number(s["base"], f"{where}.base", 0.0), per,
                                         _number(s["branch"], f"{where}.branch", 0.0),
                                         _integer(s.get("shared", 0), f"{where}.shared", 0)))
            if not slots:
                raise ValueError("\"slots\" is empty")
            scale = _number(obj.get("scale", 1.0), "scale", 0.0)
            if scale == 0.0:
                raise ValueError("\"scale\" must be > 0")
            if not isinstance(obj["space"], str):
                raise ValueError("\"space\" is not a string")
            return cls(obj["space"], _integer(obj["input_size"], "input_size", 1), cands, tuple(slots),
                       _number(obj["fixed_ms"], "fixed_ms"), scale, dict(obj.get("meta", {})),
                       dict(obj.get("fit", {})))
        except KeyError as e:
            raise ValueError(f"{source}: malformed per-filter latency table (no {e})") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: malformed per-filter latency table ({e})") from None

    @classmethod
    def load(cls, path: str) -> "KernelLatency":
        from common.io import not_regular
        problem = not_regular(path)
        if problem:
            raise ValueError(f"{path}: {problem}")
        try:
            with open(path) as f:
                obj = json.load(f)
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        return cls.from_json(obj, path)


def _array(x, what: str) -> list:
    """``x`` when it is a JSON array (a string is not: ``"357"`` would read as three kernel sizes)."""
    if not isinstance(x, list):
        raise ValueError(f"\"{what}\" must be an array, got {type(x).__name__}")
    return x


def _number(x, what: str, low: float | None = None) -> float:
    """``x`` as a finite float (a JSON number, not a string or a bool), at least ``low`` when given."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"\"{what}\" must be a number, got {x!r}")
    v = float(x)
    if not math.isfinite(v) or abs(v) > FLOAT32_MAX or (low is not None and v < low):
        raise ValueError(f"\"{what}\" must be finite in float32{'' if low is None else f' and >= {low:g}'}, "
                         f"got {x!r}")
    return v


def _integer(x, what: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < low:
        raise ValueError(f"\"{what}\" must be an integer >= {low}, got {x!r}")
    return x


def _design(n) -> np.ndarray:
    """One regression row: [1, n_1 … n_K, B − 1]."""
    n = np.asarray(n, np.float64)
    return np.concatenate([[1.0], n, [max(0, int(np.count_nonzero(n)) - 1)]])


def fit(space: SearchSpace, archs, block_ms, fixed_ms: float, meta: dict | None = None) -> KernelLatency:
    """Fits every slot's coefficients (non-negative least squares) to measured block latencies.

    Args:
        archs: architectures (choice arrays) whose blocks were timed.
        block_ms: ``block_ms[i][j]`` milliseconds of block ``j`` of ``archs[i]``.
        fixed_ms: the parts the search does not change plus the invocation overhead.
    """
    from scipy.optimize import nnls
    counts = [slot_counts(space, a) for a in archs]
    slots, residuals = [], {}
    for j, slot in enumerate(space.blocks()):
        x = np.stack([_design(c[j]) for c in counts])
        y = np.array([float(ms[j]) for ms in block_ms])
        coef, _ = nnls(x, y)
        err = x @ coef - y
        residuals[slot.name] = {"points": len(y), "rmse_ms": float(np.sqrt(np.mean(err ** 2))),
                                "mape": float(np.mean(np.abs(err) / np.maximum(y, 1e-9)) * 100.0)}
        slots.append(SlotLatency(slot.name, float(coef[0]), tuple(float(v) for v in coef[1:-1]), float(coef[-1]),
                                 0 if prunable(slot) else slot.in_ch))
    return KernelLatency(space.name, space.input_size, tuple(space.candidates), tuple(slots), float(fixed_ms),
                         1.0, dict(meta or {}), {"slots": residuals})


def _terms(model: KernelLatency, space: SearchSpace, arch) -> np.ndarray:
    """``[Σ_s a_{s,k}·n_{s,k} for each kernel k] + [Σ_s base_s + c_s·(B_s − 1)]`` of ``arch``."""
    out = np.zeros(len(model.candidates) + 1)
    for s, n in zip(model.slots, slot_counts(space, arch)):
        out[:-1] += np.asarray(s.per_filter) * n
        out[-1] += s.base + s.branch * (int(np.count_nonzero(n)) - 1)
    return out


def calibrate(model: KernelLatency, space: SearchSpace, archs, measured_ms, per_kernel: bool = False) -> KernelLatency:
    """Fits the table to whole models measured alone (parts timed in a chain still overlap and cache differently
    from one whole invocation): ``fixed_ms`` and one ``scale`` on the whole sum (least squares; the default), or,
    with ``per_kernel``, ``fixed_ms`` and one scale per kernel size's per-filter terms plus one for the blocks' base
    and branch terms (non-negative least squares), folded into the coefficients (``scale`` stays 1). On this host's
    validation set the single scale predicted as well (``benchmarks/results/ednas_latency.json``)."""
    y = np.asarray(measured_ms, np.float64)
    info = {"archs": len(y), "uncalibrated_fixed_ms": model.fixed_ms, "per_kernel": per_kernel}
    if not per_kernel:
        scale, fixed = np.polyfit([model.slots_ms(space, a) for a in archs], y, 1)
        return dataclasses.replace(model, fixed_ms=float(fixed), scale=float(scale),
                                   fit=dict(model.fit, calibration=info))
    from scipy.optimize import nnls
    x = np.stack([np.concatenate([_terms(model, space, a), [1.0]]) for a in archs])
    coef, _ = nnls(x, y)
    scales, rest, fixed = coef[:-2], coef[-2], coef[-1]
    slots = tuple(dataclasses.replace(s, base=s.base * rest, branch=s.branch * rest,
                                      per_filter=tuple(float(v * k) for v, k in zip(s.per_filter, scales)))
                  for s in model.slots)
    info.update(kernel_scales={str(k): float(v) for k, v in zip(model.candidates, scales)}, rest_scale=float(rest))
    return dataclasses.replace(model, slots=slots, fixed_ms=float(fixed), scale=1.0,
                               fit=dict(model.fit, calibration=info))
