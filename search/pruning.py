"""Hand-made baselines of the Lite0-anchored space at a MACs budget (issue 15's item 6): the search has to beat
what channel pruning and kernel cropping of the teacher give at the same MACs and the same distillation budget.

Both start from a member of the space held by a seeded supernet (`MetaKernelSupernet.inherit` + `member_choice`,
e.g. EfficientNet-Lite0 with its ImageNet weights) and express the baseline as an architecture of that supernet, so
`MetaKernelSupernet.derive` / `extract` write its spec and weights like any searched model's:

- `crop_kernels`: every depthwise filter at another kernel size of the space (Lite0's 5×5 → 3×3: the centred crop of
  its kernel, which is how a derived block reads a meta kernel);
- `l1_prune`: in every block with an expansion conv, the same share of its depthwise filters kept — those whose
  expansion-conv filter has the largest L1 norm (Li et al. 2017, "Pruning Filters for Efficient ConvNets") — with the
  share found by bisection so that the exact MACs land on the budget. A pruned filter is the "None" choice.
"""
from __future__ import annotations

import math

import numpy as np


def l1_importance(block) -> np.ndarray:
    """L1 norm of each expansion-conv output filter of a :class:`search.supernet.SearchMBConv` (its depthwise
    filters' importance), shape ``(expanded width,)``."""
    return np.abs(np.asarray(block.expand_conv.kernel)).sum(axis=(0, 1, 2))


def crop_kernels(net, arch, mapping: dict[int, int]) -> list[np.ndarray]:
    """``arch`` with every filter of kernel size ``k`` moved to ``mapping[k]`` (e.g. ``{5: 3}``); pruned filters stay
    pruned."""
    out = []
    for block, choice in zip(net.blocks, arch):
        choice = np.asarray(choice).copy()
        if block.searchable:
            offset = block.dw.offset
            for k, to in mapping.items():
                if k in block.candidates and to in block.candidates:
                    choice[choice == block.candidates.index(k) + offset] = block.candidates.index(to) + offset
        out.append(choice)
    return out


def _keep_share(net, arch, share: float) -> list[np.ndarray]:
    out = []
    for block, choice in zip(net.blocks, arch):
        choice = np.asarray(choice).copy()
        if block.searchable and block.dw.per_filter and block.dw.allow_none:
            n = len(choice)
            keep = max(1, math.ceil(share * n))
            order = np.argsort(-l1_importance(block), kind="stable")
            choice[order[keep:]] = 0  # "None"
        out.append(choice)
    return out


def l1_prune(net, arch, target: float, tol: float = 0.01) -> tuple[list[np.ndarray], float, int]:
    """``arch`` with the same share of depthwise filters kept in every prunable block, chosen by expansion-filter L1
    norm, the share bisected until the exact MACs are within ``tol`` of ``target`` (or as close as whole filters
    get). Returns ``(arch, share, macs)``.

    Raises:
        ValueError: ``target`` is above ``arch``'s own MACs or below what one filter per block costs.
    """
    full = net.macs(arch)
    lowest = net.macs(_keep_share(net, arch, 0.0))
    if not lowest <= target <= full:
        raise ValueError(f"target {target:,.0f} MACs is outside what pruning reaches ({lowest:,} … {full:,})")
    lo, hi = 0.0, 1.0
    best = (arch, 1.0, full)
    for _ in range(40):
        mid = (lo + hi) / 2
        pruned = _keep_share(net, arch, mid)
        macs = net.macs(pruned)
        if abs(macs - target) < abs(best[2] - target):
            best = (pruned, mid, macs)
        if abs(macs - target) <= tol * target:
            break
        lo, hi = (mid, hi) if macs < target else (lo, mid)
    return best
