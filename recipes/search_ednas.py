"""E-DNAS search (García López et al.): the meta-kernel search with the latency-table loss and the feedback block.

    python -m benchmarks.ednas_latency --out benchmarks/results/ednas_latency.json     # the per-filter table, once
    python -m recipes.search_ednas --dataset=folder:../shared/data/cifar10 \\
        --latency_table=benchmarks/results/ednas_latency_table.json --target_ms=1.5 --epochs=10 --out_dir=runs/ednas

Every depthwise filter of the supernet (``--space``) chooses a kernel among ``--candidates`` (centred masks of one
meta kernel, Gumbel-softmax over kernels) or "None". The cost is the expected latency Σ P · LAT over a per-filter
LiteRT latency table measured on this host (Eq. 11; :mod:`search.kernel_latency`), held inside ``T(1 ± η)`` around
``--target_ms`` by the band barrier (Eq. 12's budget; λ plays Eq. 13's β). ``--feedback`` (default on here) is the
feedback block of Eq. 3–4: each weight step runs two paths on two batches and merges them by β_j = tanh(1/L_j) / Σ.
The derived model is the argmax; where it misses the target by more than ``--tolerance`` the projection moves
single filters by the table's per-filter latencies (reported as a share of the filters). The 11×11 depthwise stem
and the additive kernel merging are options of the zoo spec (``stem.depthwise``) and of ``recipes.train
--reparam``, applied when retraining.

Every other flag, output and the resume behaviour are ``recipes.search_metakernel``'s (this recipe is that search with
E-DNAS defaults): ``derived.json``, ``derived_init.npz``, ``kernel_distribution.png``, ``alpha_trajectories.png``
(choice probabilities and table latency per epoch), ``history.json`` (``expected_ms``, ``argmax_ms`` per epoch),
``summary.json``, ``tensorboard/``, ``checkpoints/``.
"""
from __future__ import annotations

from absl import flags

from recipes import search_metakernel as mk
from recipes.cli import UsageError, run
from workflows.search_metakernel import run as run_search

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(mk)
FLAGS.set_default("feedback", True)
FLAGS.set_default("out_dir", "runs/search_ednas")


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.latency_table:
        raise UsageError("--latency_table: required (python -m benchmarks.ednas_latency writes one), with --target_ms")
    mk.report(run_search(mk.config_from_flags()))


if __name__ == "__main__":
    run(main)
