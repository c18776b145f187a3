"""Top-1 / top-5 accuracy of a spec with weights on one split of a dataset.

    python -m recipes.evaluate --model=runs/mk_8m/derived.json --weights=runs/train_mk8m/weights.npz \\
        --dataset=folder:../shared/data/cifar10_subset --json=runs/train_mk8m/eval.json
    python -m recipes.evaluate --model=efficientnet_lite0 --weights=imagenet --dataset=imagenet2012 --split=validation

The class count is the weights file's classifier width and must equal the dataset's. Images are resized on the
shorter side and centre-cropped to ``--input_size`` (default: the spec's), no augmentation; the model takes raw
0–255 RGB (its preprocessing is inside). Top-1 is the argmax, top-5 ``in_top_k`` (reported with 5 or more classes),
the same Keras metrics ``recipes.train`` reports for validation, so the same split and limit reproduce its
``val_top1``. Prints the result; ``--json`` also writes it.
"""
from __future__ import annotations

import dataclasses
import sys

from absl import flags

from recipes.cli import UsageError, define_on_bad_image, run
from training.distribute import STRATEGIES
from workflows import evaluate
from workflows.evaluate import EvaluateConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name (python -m zoo list) or path of a spec .json.")
flags.DEFINE_string("weights", None, "Weights to evaluate: a .npz path (e.g. a recipes.train weights.npz), a zoo tag "
                                     "such as 'imagenet', or '' for random init (a sanity baseline). Required.")
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder "
                                         "images), 'tsv:PATH' (labels.tsv file list with a fixed "
                                         "300-image test split) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
define_on_bad_image()
flags.DEFINE_string("split", "test", "Split to evaluate: 'test' (aliases 'val', 'validation'), 'train', or any "
                                     "tensorflow-datasets split string.")
flags.DEFINE_integer("input_size", None, "Square input size (default: the one in the weights' model card, else the "
                                         "spec's).", lower_bound=8)
flags.DEFINE_integer("batch_size", 100, "Batch size (does not change the result).", lower_bound=1)
flags.DEFINE_integer("limit", None, "Evaluate only the first N examples of the split.", lower_bound=1)
flags.DEFINE_string("json", None, "Also write the result to this JSON file.")
flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy (training/distribute.py).")
flags.DEFINE_integer("cpu_replicas", 1, "With --strategy=mirrored on a host without GPUs: logical CPU devices to "
                                        "replicate over.", lower_bound=1)
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_bool("progress", True, "Progress bar over the batches (on a terminal only).")
flags.mark_flag_as_required("model")


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = EvaluateConfig(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(EvaluateConfig)})
    out = evaluate.run(config)
    size = out["input_size"]
    top5 = f"  top-5 {out['top5']:.4f}" if "top5" in out else ""
    print(f"{out['model']} on {config.dataset} {config.split} ({out['examples']} examples, {size}x{size}): "
          f"top-1 {out['top1']:.4f}{top5}")
    sys.stdout.flush()


if __name__ == "__main__":
    run(main)
