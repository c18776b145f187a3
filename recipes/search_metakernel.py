"""Meta-kernel search (Chen et al. 2019) to a MACs budget, writing a derived zoo spec, plots and the search state.

    python -m recipes.search_metakernel --dataset=folder:../shared/data/cifar10_subset --target_macs=8e6 \\
        --epochs=10 --out_dir=runs/mk_8m
    python -m recipes.search_metakernel --flagfile=my_search.flags        # absl flagfile

Every depthwise filter of the supernet (``--space``: MixNet-like ``cifar`` at 32×32, or ``imagenet`` at 224) chooses a
kernel among ``--candidates`` or "None" (pruned). Weights train on the training split, α on a held-out part of it
(``--holdout``; ``--alpha_data=same``: on the weights' batches, the paper's Algorithm 1) with CE + λ·L_FLOPs, the
paper's Eq. 6 (0 inside ``T(1±η)``, ±log E[MACs] outside; ``--lam``, ``--eta``, ``--cost_form``) around
``--target_macs``; the Gumbel-softmax temperature anneals from ``--tau_start`` to ``--tau_end``. The summary line
gives the argmax architecture's MACs and its supernet top-1 (BN re-estimated) beside E[MACs], how many filters the
final projection moves, and how many layers mix kernel sizes. Rerunning the same command after a kill resumes from
the last epoch checkpoint in ``--out_dir``.

Writes under ``--out_dir``: ``derived.json`` (or ``--output``; a zoo spec whose provenance records the method,
target, seed, data and expected/exact MACs), ``derived_init.npz`` (the derived model's weights extracted from the
supernet, loadable with ``zoo.build(spec, weights=...)``), ``kernel_distribution.png`` (filters per kernel size per
layer, the paper's Fig. 6), ``alpha_trajectories.png``, ``history.json``, ``summary.json``, ``tensorboard/`` and
``checkpoints/``.
"""
from __future__ import annotations

import dataclasses

from absl import flags

from recipes.cli import UsageError, define_distillation, define_on_bad_image, run
from workflows.search_metakernel import SearchMetakernelConfig
from workflows.search_metakernel import run as run_search

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder images, "
                                         "PATH/train and PATH/test when present), 'tsv:PATH' (labels.tsv file list "
                                         "with a fixed 300-image test split) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
define_on_bad_image()
define_distillation()
flags.DEFINE_enum("space", "cifar", ["cifar", "imagenet", "ablation", "lite0"],
                  "Search space: MixNet-like 'cifar' (32×32 default), 'imagenet' (224×224, MixNet-M macro "
                  "architecture), 'ablation' (32×32 ReLU inverted residuals, expansion 6: the kernel-ablation "
                  "backbone of benchmarks/kernel_ablation.py) or 'lite0' (EfficientNet-Lite0's exact macro "
                  "architecture at 224; a fresh search starts from Lite0's ImageNet weights, its kernels "
                  "zero-padded into the meta kernels).")
flags.DEFINE_float("width", 1.0, "Width multiplier of the 'cifar' space (0.05 to 4).", lower_bound=0.05)
flags.DEFINE_integer("depth", 1, "Block repeats per stage of the 'cifar' space.", lower_bound=1)
flags.DEFINE_integer("input_size", None, "Input size (default: 32 for 'cifar' and 'ablation', 224 for 'imagenet' and "
                                         "'lite0').", lower_bound=16)
flags.DEFINE_integer("budget_input_size", None, "Count --target_macs (and every reported MACs, and the derived spec's "
                                                "input size) at this input size while the supernet trains at "
                                                "--input_size, e.g. search at 128 for speed on a 224 budget.",
                     lower_bound=16)
flags.DEFINE_list("candidates", ["3", "5", "7"], "Candidate depthwise kernel sizes (distinct odd integers). One "
                  "size is a pruning search: each filter of an expanded block keeps that kernel or is pruned.")
flags.DEFINE_enum("dw_mode", "meta", ["meta", "multi"], "Supernet form: 'meta' (one conv, masked meta kernel) or "
                                                        "'multi' (DARTS-style baseline, one conv per candidate).")
flags.DEFINE_float("target_macs", None, "Target T of the cost loss: multiply-accumulates of one forward pass at the "
                                        "search input size (e.g. 8e6).")
flags.DEFINE_string("latency_table", "", "E-DNAS latency loss: a per-filter latency table of this space (JSON "
                    "written by python -m benchmarks.ednas_latency); the cost becomes the expected latency in ms "
                    "(Eq. 11) steered to --target_ms with the same band barrier, instead of E[MACs] to --target_macs.")
flags.DEFINE_float("target_ms", None, "Target T in milliseconds with --latency_table (the table's host and clock).")
flags.DEFINE_float("lam", 2.0, "λ: weight of the cost loss (paper: 2.0; at most 1000).", lower_bound=0.0)
flags.DEFINE_float("eta", 0.1, "η: slack of the cost loss around T (paper: 0.1).", lower_bound=1e-4)
flags.DEFINE_enum("cost_form", "paper", ["paper", "pull"], "Cost loss: 'paper' (Eq. 6: ±log E[MACs] outside "
                  "T(1±η), 0 inside) or 'pull' (the project's earlier form, pulling toward T inside the band too).")
flags.DEFINE_enum("alpha_data", "holdout", ["holdout", "same"], "Batches α learns on: 'holdout' (a held-out part of "
                  "the training split, --holdout) or 'same' (the weights' batches, one pass: the paper's Algorithm 1).")
flags.DEFINE_float("tau_start", 5.0, "Initial Gumbel-softmax temperature.", lower_bound=1e-3)
flags.DEFINE_float("tau_end", 0.5, "Final temperature (exponential annealing per step).", lower_bound=1e-3)
flags.DEFINE_integer("epochs", 10, "Search epochs.", lower_bound=1)
flags.DEFINE_bool("feedback", False, "E-DNAS feedback block: every weight step runs two paths on two training batches "
                  "and merges them with weights tanh(1/L_j) normalised (Eq. 3-4); an epoch then reads twice the "
                  "batches.")
flags.DEFINE_integer("warmup_epochs", 0, "Epochs that train only the weights before α starts moving.", lower_bound=0)
flags.DEFINE_integer("batch_size", 64, "Batch size (weights and α batches).", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the weight split).",
                     lower_bound=1)
flags.DEFINE_float("holdout", 0.2, "Fraction of the training split held out for α.", lower_bound=0.01, upper_bound=0.9)
flags.DEFINE_integer("limit", None, "Use only the first N training examples (quick runs).", lower_bound=2)
flags.DEFINE_integer("val_limit", 1000, "Test examples used for the per-epoch argmax accuracy (0: skip).",
                     lower_bound=0)
flags.DEFINE_float("w_lr", 0.05, "Weight learning rate (SGD, Nesterov momentum 0.9).", lower_bound=0.0)
flags.DEFINE_float("a_lr", 1e-2, "α learning rate (Adam, β1 = 0.5).", lower_bound=0.0)
flags.DEFINE_float("a_weight_decay", 0.0, "L2 weight on α. Per-filter α get CE gradients of ~1e-4, so even 1e-3 "
                                        "pins them near 0 (benchmarks/metakernel_dynamics.py).", lower_bound=0.0)
flags.DEFINE_float("a_entropy", 0.0, "β: weight of the mean per-filter choice entropy in α's loss, ramped linearly "
                                    "from 0 to β over the search, so late in the search every filter commits and "
                                    "the argmax's MACs follow E[MACs] into the band (0: the paper's objective; "
                                    "--space=lite0 on the ImageNet sample uses 2, benchmarks/metakernel_ab.py).",
                   lower_bound=0.0)
flags.DEFINE_bool("project", True, "If the argmax architecture misses --target_macs (or --target_ms by the latency "
                                   "table) by more than --tolerance, move single filters' choices (least α "
                                   "preference lost per MAC, or per ms, first) until it "
                                   "lands on the target; the spec records both figures and the number of moves.")
flags.DEFINE_float("tolerance", 0.03, "Relative MACs tolerance around the target.", lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Seed of initialisation, Gumbel noise, data order.")
flags.DEFINE_string("name", None, "Name of the derived spec (default: mk_<space>_<target>).")
flags.DEFINE_string("output", None, "Path of the derived spec (default: OUT_DIR/derived.json).")
flags.DEFINE_string("out_dir", "runs/search_metakernel", "Directory for every output and the resumable state.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy of the supernet training (training/distribute.py).")
flags.DEFINE_integer("cpu_replicas", 1, "With --strategy=mirrored on a host without GPUs: logical CPU devices to "
                                        "replicate over.", lower_bound=1)
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def config_from_flags() -> SearchMetakernelConfig:
    """The flags as a config (every field of the config is a flag of the same name)."""
    try:
        candidates = tuple(int(c) for c in FLAGS.candidates)
    except ValueError as e:
        raise UsageError(f"--candidates={','.join(FLAGS.candidates)}: {e}") from None
    fields = {f.name for f in dataclasses.fields(SearchMetakernelConfig)} - {"candidates"}
    return SearchMetakernelConfig(candidates=candidates, **{k: getattr(FLAGS, k) for k in fields})


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    report(run_search(config_from_flags()))


def report(s: dict) -> None:
    """The summary line of a finished search."""
    acc = "n/a" if s["argmax_val_acc"] is None else f"{s['argmax_val_acc']:.3f}"
    mix = s["mixture"]
    if "target_ms" in s:
        print(f"{s['name']}: {s['table_ms']:.3f} ms by the latency table ({s['table_ms_vs_target']:+.2%} vs target "
              f"{s['target_ms']:g} ms), E[latency] {s['expected_ms']:.3f} ms; {s['macs']:,} MACs; argmax supernet "
              f"top-1 {acc}; projection {'moved' if s['projected'] else 'would move'} "
              f"{s['projection_filters_changed']} of {s['searchable_filters']} filters; "
              f"{mix['mixed_layers']}/{mix['layers']} layers mixed; {s['params']:,} params -> {s['spec']}")
        return
    print(f"{s['name']}: {s['macs']:,} MACs ({s['macs_vs_target']:+.2%} vs target {s['target_macs']:,.0f}); "
          f"argmax {s['argmax_macs']:,} ({s['argmax_vs_target']:+.2%}), E[MACs] {s['expected_macs']:,.0f}, argmax "
          f"supernet top-1 {acc}; projection {'moved' if s['projected'] else 'would move'} "
          f"{s['projection_filters_changed']} of {s['searchable_filters']} filters"
          f"{' and ' + str(s['projection_layers_changed']) + ' layer(s)' if s['projection_layers_changed'] else ''}; "
          f"{mix['mixed_layers']}/{mix['layers']} layers mixed; {s['params']:,} params -> {s['spec']}")


if __name__ == "__main__":
    run(main)
