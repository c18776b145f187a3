"""The whole pipeline in one command (``make demo``): meta-kernel search → derived spec → retrain → export float32 and
int8 TFLite → LiteRT latency → a summary table and plots.

    python -m recipes.pipeline --out_dir=runs/demo                                 # synthetic shapes, ~7 min on 2 cores
    python -m recipes.pipeline --dataset=folder:../shared/data/cifar10_subset --out_dir=runs/demo_cifar

Each stage is the recipe a user would run by hand (``python -m recipes.<stage> …``, the exact command lines are in
``summary.json`` and the logs under ``OUT_DIR/logs/``), writing into its own folder: ``search/``, ``train/``,
``export/``, ``latency/``. A stage whose result already exists is skipped, and search and training resume from their
checkpoints, so rerunning the same command after a kill continues where it stopped. Writes ``summary.json`` and
``pipeline.png`` (MACs vs target, accuracy of Keras / float32 / int8, file size, latency) next to the search plots.
"""
from __future__ import annotations

import dataclasses
import sys

from absl import flags

from recipes.cli import UsageError, define_on_bad_image, print_rows, run, run_stage
from workflows import pipeline
from workflows.pipeline import PipelineConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "shapes", "Dataset of every stage: 'shapes' (built-in synthetic), 'folder:PATH', "
                                         "'tsv:PATH' or a tensorflow-datasets name.")
flags.DEFINE_alias("data", "dataset")  # the flag's name before it matched every other recipe
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
define_on_bad_image()
flags.DEFINE_string("out_dir", "runs/demo", "Directory of all outputs (one sub-folder per stage).")
flags.DEFINE_float("width", 0.5, "Width multiplier of the 32×32 search space (0.05 to 4).", lower_bound=0.05)
flags.DEFINE_float("target_macs", 2.5e6, "MACs budget of the search.")
flags.DEFINE_integer("search_epochs", 4, "Search epochs.", lower_bound=1)
flags.DEFINE_integer("train_epochs", 15, "Retraining epochs of the derived model.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch of search and training (default: one pass).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size of search and training.", lower_bound=1)
flags.DEFINE_integer("limit", None, "Use only the first N training examples.", lower_bound=2)
flags.DEFINE_integer("eval_examples", 500, "Test examples for the accuracy of Keras, float32 and int8 TFLite.",
                     lower_bound=1)
flags.DEFINE_integer("threads", 1, "LiteRT threads of the latency benchmark.", lower_bound=1)
flags.DEFINE_integer("runs", 200, "Timed LiteRT runs per model.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of every stage.")


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    given = {a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith(("--data=", "--dataset="))}
    if len(given) > 1:  # --data is an alias of --dataset: the last one would win silently
        raise UsageError(f"--data and --dataset name different data ({', '.join(sorted(given))}); give one")
    config = PipelineConfig(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(PipelineConfig)})
    result = pipeline.run(config, run_stage)
    summary, out = result.summary, config.out_dir
    search, train = summary["search"], summary["train"]
    f32, i8 = summary["models"]["float32"], summary["models"]["int8"]
    rows = [("derived model", f"{summary['name']}: {search['macs']:,} MACs ({search['macs_vs_target']:+.2%} vs "
                              f"target {config.target_macs:,.0f}), {search['params']:,} params"),
            ("retrained (Keras)", f"top-1 {train.get('val_top1', float('nan')):.3f}"),
            ("TFLite float32", f"top-1 {f32['top1']:.3f}, {f32['bytes'] / 1e3:.0f} kB, "
                               f"{f32['latency']['median_ms']:.3f} ms median"),
            ("TFLite int8", f"top-1 {i8['top1']:.3f}, {i8['bytes'] / 1e3:.0f} kB "
                            f"({f32['bytes'] / i8['bytes']:.2f}× smaller), {i8['latency']['median_ms']:.3f} ms "
                            f"({i8['latency']['median_ms'] / f32['latency']['median_ms']:.2f}× float)")]
    print_rows(rows)
    print(f"outputs: {out}/summary.json, {out}/pipeline.png, {out}/search/kernel_distribution.png")


if __name__ == "__main__":
    run(main)
