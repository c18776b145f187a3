"""The one interface every supernet offers (DESIGN.md §7): an architecture in, a zoo spec out, the derived model's
weights out, the derived Keras model.

- ``derive(arch, *, name=..., provenance=None) -> ModelSpec``: the architecture as a zoo spec (the schema of
  ``zoo/specs``), built by :func:`models.builder.build` into stock layers only.
- ``extract(arch, spec=None) -> dict[str, np.ndarray]``: the derived model's weights taken from the supernet, keyed
  ``"layer/variable"`` as :mod:`models.weights` (``spec`` defaults to ``derive(arch)``).
- ``derived_model(arch, keras_module=None)``: :func:`build_derived` — the spec built with the builder and loaded with
  the extracted weights.

An *architecture* is each method's own representation (meta-kernel: one choice array per block; SPOS: an
``(n_blocks, 3)`` int array). Each block layer derives and extracts its own part (:class:`SearchBlock`: once-for-all's
``get_active_subnet`` pattern); a supernet composes them with its stem and head. Equivalence (the supernet running a
fixed architecture == its derived model, max|Δ| ≤ 1e-4) is tested for every method.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from models.spec import BlockSpec, ModelSpec, Provenance


@runtime_checkable
class SearchBlock(Protocol):
    """A supernet block layer (named like the derived block, ``s{stage}_b{index}``) that hands back its part of a
    derived model for one choice."""

    name: str

    def derive_block(self, choice) -> BlockSpec:
        """The block spec of ``choice`` (same schema as the zoo's blocks)."""

    def extract_block(self, choice, spec: BlockSpec | None = None) -> dict[str, np.ndarray]:
        """The derived block's weights (``"layer/variable"``) for ``choice``; ``spec`` (default
        ``derive_block(choice)``) must be that block."""


@runtime_checkable
class Supernet(Protocol):
    """What every supernet offers; see the module docstring."""

    def derive(self, arch, *, name: str = ..., provenance: Provenance | None = None) -> ModelSpec:
        """The zoo spec of ``arch``."""

    def extract(self, arch, spec: ModelSpec | None = None) -> dict[str, np.ndarray]:
        """The weights of ``arch``'s derived model, keyed ``"layer/variable"``."""

    def derived_model(self, arch, keras_module=None) -> Any:
        """``arch``'s derived model (stock layers) carrying the extracted weights."""


def build_derived(supernet: Supernet, arch, keras_module=None, spec: ModelSpec | None = None):
    """The shared ``derived_model``: ``spec`` (default ``supernet.derive(arch)``) built by :func:`models.builder.build`
    with ``keras_module`` (``keras`` or ``tf_keras``) and loaded with ``supernet.extract(arch, spec)`` by layer name
    (every derived weight must be there)."""
    from models.builder import build
    from models.weights import assign
    spec = supernet.derive(arch) if spec is None else spec
    model = build(spec, keras_module)
    assign(model, supernet.extract(arch, spec), source="supernet extraction")
    return model


def block_specs(spec: ModelSpec | None, n_blocks: int) -> list[BlockSpec | None]:
    """The blocks of ``spec`` in order (``n_blocks`` Nones when ``spec`` is None), checked against the supernet's
    block count."""
    if spec is None:
        return [None] * n_blocks
    blocks = [b for _, _, b in spec.blocks()]
    if len(blocks) != n_blocks:
        raise ValueError(f"spec {spec.name!r} has {len(blocks)} blocks, the supernet {n_blocks}")
    return blocks
