"""Single Path One-Shot NAS (Guo et al. 2019): supernet training by uniform (constraint) single-path sampling, then
evolutionary search under hard constraints, with random search as the baseline.

    python -m recipes.search_spos --dataset=folder:../shared/data/cifar10_subset --phase=both \\
        --max_macs=3e6 --epochs=20 --out_dir=runs/spos
    python -m recipes.search_spos --phase=evolution --out_dir=runs/spos --max_macs=2.5e6   # reuse the supernet

Phases (``--phase``): ``supernet`` trains the weight-sharing supernet (ShuffleNetV2 choice blocks choice_3/5/7/x,
optional channel search ``--channel_ratios`` and mixed precision ``--bits``) on the training split minus a held-out
part (``--holdout``, the paper's validation split of the training set); ``evolution`` runs Algorithm 1 (population
``--population``, ``--iterations``, ``--top_k``, mutation probability ``--mutation_prob``) and, with
``--random_search``, the random baseline on the same budget; every candidate is evaluated on ``--val_images`` held-out
images after recalibrating BatchNorm on ``--recal_images`` training images; ``derived.json`` is the better of the two
searches' best paths (``summary.json`` says which). ``--fix_block`` / ``--fix_channel_ratio`` hold one field at one
option in every block and search the rest (the paper's Table 4 rows; ``benchmarks/spos_ablation.py``);
``--fix_path`` holds a whole network and searches its ``--bits`` only (supernet training samples the bits
alone). Constraints:
any of ``--max_macs``, ``--max_params``, ``--max_bitops``, ``--max_latency_ms`` (with ``--latency_table``, a table
written by ``python -m benchmarks.latency_model --space=spos_imagenet`` (or ``spos_cifar``;
``search.latency.build_table``); ``benchmarks/results/latency_lut_spos.json`` has every block of the
``--space=imagenet`` space with the paper's channel ratios, timed on this host by
``python -m benchmarks.latency_model --space=spos_imagenet``; parts missing from a table, e.g. a head with another
class count, fall back to its MACs-affine fit; a table's whole-model ``calibration``, written by
``benchmarks.latency_model --calibrate``, is applied: the committed SPOS table predicts whole models within 1.0%
leave-one-out, against 5.5% for its raw sum of parts). ``both`` runs the two in order. Rerunning the same
command after a kill resumes (supernet: last epoch checkpoint; evolution: last evaluated candidate).

Writes under ``--out_dir``: ``supernet/`` (checkpoints, ``history.json``), ``tensorboard/``, ``evolution_state.json``
and ``random_state.json`` (resumable search states), ``derived.json`` (the best candidate as a zoo spec, provenance
``spos``; of the better of evolution and random search), ``derived_init.npz`` (its weights sliced from the supernet,
for ``recipes.train --weights``),
``evolution.png`` (best and top-k accuracy per iteration, evolution vs random: the paper's Fig. 3),
``population.png`` (every evaluated candidate on the accuracy-vs-MACs plane with the constraint line) and
``summary.json``.
"""
from __future__ import annotations

import dataclasses

from absl import flags

from models.spec import SHUFFLE_CHOICES  # = search.spos.CHOICES, without importing TensorFlow
from recipes.cli import UsageError, define_on_bad_image, run
from workflows.search_spos import SearchSposConfig
from workflows.search_spos import run as run_spos

FLAGS = flags.FLAGS
flags.DEFINE_enum("phase", "both", ["supernet", "evolution", "both"], "What to run.")
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder "
                                         "images), 'tsv:PATH' (labels.tsv file list with a fixed "
                                         "300-image test split) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
define_on_bad_image()
flags.DEFINE_enum("space", "cifar", ["cifar", "imagenet"], "'cifar': paper Table 2 layout at 32×32 with channels × "
                                                           "--width and --depth blocks; 'imagenet': Table 2 at 224.")
flags.DEFINE_float("width", 0.25, "Channel multiplier of the 'cifar' space (1.0 = 64/160/320/640; 0.05 to 4).",
                   lower_bound=0.05)
flags.DEFINE_list("depth", ["4", "4", "8", "4"], "Choice blocks per stage of the 'cifar' space.")
flags.DEFINE_list("choices", list(SHUFFLE_CHOICES), "Block choices searched per block: ShuffleNetV2 units with a "
                  "3/5/7 depthwise kernel, or 'x' (Xception-like, three 3×3 depthwise separable convs); the paper's "
                  "four by default.")
flags.DEFINE_list("channel_ratios", ["1.0"], "Mid-channel multipliers searched per block (paper: 0.2,0.4,…,1.6; "
                                             "'1.0' alone = no channel search).")
flags.DEFINE_list("bits", [], "Bit-width choices w:a per block (w 1-8 or 32 = float, a 1-8, 16 or 32 = float), "
                              "e.g. 1:2,2:2,1:4,2:4,3:4,4:4 (the paper's set) or 8:8,8:16,32:32 (what LiteRT "
                              "deploys: int8, int16x8, float; export_tflite --mode=mixed); empty = full precision.")
flags.DEFINE_enum("sampling", "constraint", ["constraint", "uniform"],
                  "Supernet path sampling: uniform among paths within the constraints (paper default) or uniform.")
flags.DEFINE_float("max_macs", None, "Hard limit on MACs (multiply-accumulates, batch 1).")
flags.DEFINE_float("max_params", None, "Hard limit on parameters.")
flags.DEFINE_float("max_bitops", None, "Hard limit on BitOps (Σ MACs·w·a over quantized blocks).")
flags.DEFINE_float("max_latency_ms", None, "Hard limit on predicted whole-model latency (needs --latency_table; "
                                            "its calibration applied).")
flags.DEFINE_string("latency_table", None, "Latency lookup table JSON (search.latency.LatencyTable), e.g. "
                                            "benchmarks/results/latency_lut_spos.json for --space=imagenet.")
flags.DEFINE_integer("epochs", 20, "Supernet training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Supernet training batch size.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the training part).",
                     lower_bound=1)
flags.DEFINE_float("lr", 0.1, "Peak learning rate (SGD, Nesterov momentum 0.9, linear decay to 0).", lower_bound=0.0)
flags.DEFINE_float("weight_decay", 4e-5, "L2 weight decay on kernels.", lower_bound=0.0)
flags.DEFINE_enum("execution", "graph", ["eager", "graph"], "Supernet step form (search/spos_train.py): 'graph' "
                  "traces once (~2.5 min for 20 blocks on 2 quiet cores), then a step costs ~1.2x a standalone "
                  "network's, and it runs under any --strategy; 'eager' compiles each branch when first sampled "
                  "(~1.5 min in all) but a step costs ~2.3x (benchmarks/results/spos_cost.json): for tiny runs.")
flags.DEFINE_float("holdout", 0.2, "Fraction of the training data held out as the search's validation split.",
                   lower_bound=0.01, upper_bound=0.9)
flags.DEFINE_integer("limit", None, "Use only the first N training examples (quick runs).", lower_bound=2)
flags.DEFINE_integer("population", 50, "Population size P.", lower_bound=2)
flags.DEFINE_integer("iterations", 20, "Evolution iterations T.", lower_bound=1)
flags.DEFINE_integer("top_k", 10, "Parents kept per iteration.", lower_bound=1)
flags.DEFINE_float("mutation_prob", 0.1, "Per-choice mutation probability.", lower_bound=1e-6, upper_bound=1.0)
flags.DEFINE_bool("random_search", True, "Also run random search on the same budget (the baseline); derived.json "
                  "is the better of the two by supernet top-1 (summary.json: derived_from).")
flags.DEFINE_string("fix_block", None, "Evolution (and random search) over the other fields only, every block this "
                    "block choice (e.g. 3: the paper's channel search with choice_3).")
flags.DEFINE_float("fix_channel_ratio", None, "Evolution (and random search) over the other fields only, every "
                   "block this channel ratio, one of --channel_ratios (e.g. 1.0: the paper's block search).")
flags.DEFINE_string("fix_path", None, "A path key of this space (a search's summary.json 'best', e.g. "
                    "0.4.0-3.4.0-…): every block keeps its choice and channel ratio, and supernet and search run over "
                    "the --bits only (the paper's mixed-precision search on a fixed network).")
flags.DEFINE_integer("recal_images", 1024, "Training images for BatchNorm recalibration per candidate.",
                     lower_bound=1)
flags.DEFINE_integer("val_images", 1000, "Held-out images each candidate is evaluated on.", lower_bound=1)
flags.DEFINE_integer("eval_batch", 256, "Batch size of recalibration and evaluation.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of initialisation, sampling and search.")
flags.DEFINE_string("name", None, "Name of the derived spec (default: spos_<space>_<seed>).")
flags.DEFINE_string("out_dir", "runs/search_spos", "Directory for every output and the resumable state.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy of supernet training (needs --execution=graph when it has several "
                  "replicas).")
flags.DEFINE_integer("cpu_replicas", 1, "With --strategy=mirrored on a CPU host: logical devices.", lower_bound=1)
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_bool("progress", True, "Show progress bars.")


def config_from_flags() -> SearchSposConfig:
    """The flags as a config (every field of the config is a flag of the same name)."""
    def parsed_list(name, parse, what):
        values = getattr(FLAGS, name)
        try:
            return tuple(parse(v) for v in values)
        except ValueError:
            raise UsageError(f"--{name}={','.join(values)}: {what}") from None

    depth = parsed_list("depth", int, "comma-separated integers (blocks per stage), e.g. 4,4,8,4")
    ratios = parsed_list("channel_ratios", float, "comma-separated numbers, e.g. 0.2,0.4,0.6")
    bits = parsed_list("bits", lambda b: tuple(int(v) for v in b.split(":")),
                       "comma-separated w:a pairs of integer bit widths, e.g. 8:8,4:8")
    parsed = dict(depth=depth, channel_ratios=ratios, bits=bits, choices=tuple(FLAGS.choices))
    fields = {f.name for f in dataclasses.fields(SearchSposConfig)} - set(parsed)
    return SearchSposConfig(**parsed, **{k: getattr(FLAGS, k) for k in fields})


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = config_from_flags()
    s = run_spos(config)
    if config.phase != "supernet":
        cost = s["best_cost"]
        line = ", ".join(f"{k} best {r['best_acc']:.4f} ({r['evaluated']} evaluated)"
                         for k, r in s["evolution"].items())
        print(f"{s['spec']}: {cost['macs']:,} MACs, {cost['params']:,} params; {line} -> {config.out_dir}/derived.json")
        if s.get("note"):
            print(f"note: {s['note']}")


if __name__ == "__main__":
    run(main)
