"""Evolutionary architecture search of SPOS (paper Algorithm 1) and its random-search baseline.

Algorithm 1, as in the official implementation: start from ``population`` random paths that satisfy the
constraints; each iteration evaluates the new paths (validation top-1 after BN recalibration, cached by
architecture), keeps the ``top_k`` best seen so far, and builds the next population from ``mutations`` mutants
(each choice of a top-k parent resampled with ``mutation_prob``) and ``crossovers`` children (each choice taken from
one of two top-k parents), both generated only among unseen paths that satisfy the constraints, topped up with random
valid paths. Random search draws the same number of unseen valid paths per iteration uniformly.

A "choice" is one field of one block: block choice, channel ratio, or bit widths (the latter two only when the
space searches them). The search state — iteration, current population, top-k, every evaluated path with its
accuracy and costs, the generator's state and the per-iteration history — is written atomically after every
evaluated candidate, and a rerun resumes exactly where it stopped (a killed run loses at most the candidate being
evaluated).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from common.errors import InputError
from common.io import atomic_write
from search import spos as sp


@dataclass(frozen=True)
class EvolutionConfig:
    population: int = 50
    iterations: int = 20
    top_k: int = 10
    mutation_prob: float = 0.1
    mutations: int = 25
    crossovers: int = 25
    max_tries: int = 10_000
    seed: int = 0

    def __post_init__(self):
        if self.population < 1 or self.iterations < 1 or not 1 <= self.top_k <= self.population:
            raise ValueError("need population ≥ 1, iterations ≥ 1 and 1 ≤ top_k ≤ population")
        if not 0 < self.mutation_prob <= 1:
            raise ValueError(f"mutation_prob must be in (0, 1], got {self.mutation_prob}")
        if self.mutations < 0 or self.crossovers < 0 or self.mutations + self.crossovers > self.population:
            raise ValueError("mutations + crossovers must not exceed the population")


class SearchStateError(InputError):
    """A saved search state belongs to a different search (space, constraints or settings)."""


class EvolutionSearch:
    """Runs Algorithm 1 (``kind="evolution"``) or the random baseline (``kind="random"``) with ``evaluate(arch) ->
    top-1`` under ``constraints``; the state lives in ``state_path`` (JSON) and is resumed when present.

    ``evaluation`` describes how ``evaluate`` measures (data, image counts, batch): it is part of the search's identity
    with the space, the constraints and the config, so a resumed state never mixes accuracies measured differently.
    """

    def __init__(self, space: sp.SposSpace, evaluate: Callable[[np.ndarray], float], constraints: sp.Constraints,
                 config: EvolutionConfig, state_path: str | None = None, kind: str = "evolution", latency=None,
                 evaluation: dict | None = None, fixed: dict[int, int] | None = None):
        """``fixed``: fields held at one option in every block (``{0: block choice index}``, ``{1: channel ratio
        index}``, ``{2: bits index}``) or at one option per block (a list: a fixed network whose bits are
        searched), so the search runs over the rest (the paper's Table 4: block search with the
        channels fixed, channel search with every block ``choice_3``)."""
        if kind not in ("evolution", "random"):
            raise ValueError(f"kind must be 'evolution' or 'random', got {kind!r}")
        self.fixed = {int(f): [int(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else int(v)
                      for f, v in (fixed or {}).items()}
        for f, v in self.fixed.items():
            values = v if isinstance(v, list) else [v]
            if f not in (0, 1, 2) or not all(0 <= x < space.sizes()[f] for x in values) or (
                    isinstance(v, list) and len(v) != space.n_blocks):
                raise ValueError(f"fixed field {f} = {v}: fields 0 (block), 1 (channel ratio), 2 (bits), each "
                                 f"below its number of options {space.sizes()} (a list: one per block, "
                                 f"{space.n_blocks})")
        self.space, self.evaluate, self.constraints, self.config = space, evaluate, constraints, config
        if not self._fields().any():
            raise ValueError(f"fixed fields {self.fixed} leave nothing to search in this space")
        self.kind, self.state_path, self.latency = kind, state_path, latency
        self.rng = np.random.default_rng([config.seed, 0 if kind == "evolution" else 1])
        self.identity = {"kind": kind, "space": space.to_json(), "constraints": dataclasses.asdict(constraints),
                         "config": dataclasses.asdict(config), "evaluation": dict(evaluation or {})}
        if self.fixed:  # absent otherwise, so states saved before fields could be fixed still resume
            self.identity["fixed"] = {str(f): v for f, v in sorted(self.fixed.items())}
        self.iteration = 0
        self.population: list[str] = []
        self.top: list[str] = []
        self.cache: dict[str, dict] = {}
        self.history: list[dict] = []
        if state_path and os.path.exists(state_path):
            self._load()

    # --- state -------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except (OSError, ValueError) as e:
            raise SearchStateError(f"{self.state_path}: unreadable search state ({e}); remove it to start the "
                                   "search over, or use another output directory") from None
        if not isinstance(state, dict) or state.get("identity") != json.loads(json.dumps(self.identity)):
            raise SearchStateError(f"{self.state_path}: holds a different search (space, constraints, settings or "
                                   "how candidates are evaluated); use another output directory")
        self.iteration, self.population, self.top = state["iteration"], state["population"], state["top"]
        self.cache, self.history = state["cache"], state["history"]
        self.rng.bit_generator.state = state["rng"]

    def save(self) -> None:
        if not self.state_path:
            return
        state = {"identity": self.identity, "iteration": self.iteration, "population": self.population,
                 "top": self.top, "cache": self.cache, "history": self.history, "rng": self.rng.bit_generator.state}
        text = json.dumps(state)
        atomic_write(self.state_path, lambda f: f.write(text.encode()))

    @property
    def done(self) -> bool:
        return self.iteration >= self.config.iterations

    # --- generation --------------------------------------------------------------------------------------------
    def _fields(self) -> np.ndarray:
        """Mask of the searched fields per block (block choice always; ratio/bits when they have options)."""
        searched = np.array(self.space.sizes()) > 1
        for f in self.fixed:
            searched[f] = False
        return np.broadcast_to(searched, (self.space.n_blocks, 3))

    def _valid_new(self, arch, taken: set) -> bool:
        k = sp.key(arch)
        return k not in self.cache and k not in taken and self.constraints.ok(sp.cost(self.space, arch, self.latency))

    def _generate(self, n: int, make: Callable[[], np.ndarray], taken: set) -> list[str]:
        out = []
        for _ in range(self.config.max_tries):
            if len(out) >= n:
                break
            a = make()
            if self._valid_new(a, taken):
                k = sp.key(a)
                out.append(k)
                taken.add(k)
        return out

    def _mutant(self) -> np.ndarray:
        parent = sp.from_key(self.top[self.rng.integers(len(self.top))])
        fresh = sp.uniform(self.space, self.rng)
        flip = (self.rng.random(parent.shape) < self.config.mutation_prob) & self._fields()
        return np.where(flip, fresh, parent).astype(np.int32)

    def _child(self) -> np.ndarray:
        i, j = self.rng.choice(len(self.top), 2, replace=len(self.top) < 2)
        a, b = sp.from_key(self.top[i]), sp.from_key(self.top[j])
        return np.where(self.rng.random(a.shape) < 0.5, a, b).astype(np.int32)

    def _random(self) -> np.ndarray:
        return sp.fix(sp.uniform(self.space, self.rng), self.fixed)

    def _next_population(self) -> list[str]:
        cfg, taken = self.config, set()
        if self.kind == "evolution" and self.top:
            pop = (self._generate(cfg.mutations, self._mutant, taken)
                   + self._generate(cfg.crossovers, self._child, taken))
        else:
            pop = []
        pop += self._generate(cfg.population - len(pop), self._random, taken)
        if not pop:
            raise sp.ConstraintError(f"no unseen path within {self.constraints.limits()} found in "
                                     f"{cfg.max_tries} draws")
        return pop

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self, progress=None, on_iteration=None) -> dict:
        """Runs (or resumes) the search; returns :meth:`result`. ``progress(total)`` makes a tqdm-like bar over
        evaluated candidates; ``on_iteration(search, record)`` is called after every iteration."""
        cfg = self.config
        bar = progress(cfg.iterations * cfg.population) if progress else None
        if bar is not None:
            bar.update(len(self.cache))
        while not self.done:
            if not self.population:
                self.population = self._next_population()
                self.save()
            for k in self.population:
                if k in self.cache:
                    continue
                arch = sp.from_key(k)
                self.cache[k] = {"acc": float(self.evaluate(arch)), **sp.cost(self.space, arch, self.latency),
                                 "iteration": self.iteration}
                self.save()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(best=f"{self.best()[1]:.4f}")
            # ties broken by the architecture key: the order must not depend on string hashing across processes
            ranked = sorted(dict.fromkeys(self.top + self.population), key=lambda k: (-self.cache[k]["acc"], k))
            self.top = ranked[: cfg.top_k]
            record = {"iteration": self.iteration + 1, "evaluated": len(self.cache),
                      "best_acc": self.cache[self.top[0]]["acc"],
                      "topk_mean_acc": float(np.mean([self.cache[k]["acc"] for k in self.top])),
                      "population_mean_acc": float(np.mean([self.cache[k]["acc"] for k in self.population]))}
            self.history.append(record)
            self.iteration += 1
            self.population = []
            self.save()
            if on_iteration:
                on_iteration(self, record)
        if bar is not None:
            bar.close()
        return self.result()

    def best(self) -> tuple[str | None, float]:
        if not self.cache:
            return None, float("nan")
        k = max(self.cache, key=lambda k: self.cache[k]["acc"])
        return k, self.cache[k]["acc"]

    def result(self) -> dict:
        k, acc = self.best()
        return {"kind": self.kind, "best": k, "best_acc": acc, "best_cost": {c: self.cache[k][c] for c in
                                                                          ("macs", "params", "bitops")} if k else None,
                "top": [{"arch": t, **self.cache[t]} for t in self.top], "history": self.history,
                "all": [{"arch": t, **c} for t, c in self.cache.items()],
                "evaluated": len(self.cache)}
