"""Fine-tune a YOLOv3-style detector (models/yolo.py) on any zoo backbone, evaluate it with VOC/COCO mAP, export it.

    python -m recipes.finetune_yolo --backbone=efficientnet_lite0 --weights=imagenet \\
        --dataset=voc:../shared/data/raccoon --input_size=224 --epochs=30 --freeze_epochs=3 --out_dir=runs/raccoon
    python -m recipes.finetune_yolo --dataset=shapes --input_size=128 --epochs=5        # synthetic, no download
    python -m recipes.finetune_yolo --dataset=voc:PATH --train_split=trainval --val_split=test ...   # VOC07 protocol

Anchors: k-means (1 − IoU) on the training boxes at the input scale (``--anchors=kmeans``, recommended), or YOLOv3's
COCO anchors scaled to the input size. The learning rate warms up linearly over ``--warmup_epochs`` and is multiplied
by 0.1 at each fraction of ``--lr_steps`` of the training steps; ``--freeze_epochs`` keeps the backbone frozen first.
Every epoch the mAP of ``--val_split`` (VOC07 and AUC at IoU 0.5, original pixels; keys ``val_*``, or ``test_*`` for
a test split) goes to ``history.json`` and TensorBoard and a checkpoint is written: rerunning the same command after a
kill resumes; other settings in the same ``--out_dir`` are refused. Writes under ``--out_dir``: ``settings.json``,
``history.json``, ``summary.json`` (with per-class AP50), ``best_weights.npz``, ``last_weights.npz``,
``predictions.png``, ``tensorboard/``, ``checkpoints/`` and with ``--export`` ``model_float32.tflite``
(+ ``model_int8.tflite``). ``best_weights.npz`` is the epoch of best mAP on ``--val_split``; with a test split
(``--val_split=test``) no epoch is chosen on it: the result is ``last_weights.npz`` and ``summary.json`` says so.
The run itself is ``detection.finetune`` (see its docstring).
"""
from __future__ import annotations

import dataclasses

from absl import flags

from detection.finetune import CHOICES, FinetuneConfig, run
from recipes.cli import UsageError
from recipes.cli import run as run_cli

D = FinetuneConfig()  # the defaults
FLAGS = flags.FLAGS
flags.DEFINE_string("backbone", D.backbone, "Backbone: zoo model name (python -m zoo list) or a spec .json path; its "
                                            "stride 8/16/32 features feed the head.")
flags.DEFINE_string("weights", D.weights, "Backbone initial weights: a zoo tag (e.g. 'imagenet'), a .npz path (zoo "
                                          "format), or '' for random init (training from scratch).")
flags.DEFINE_string("dataset", D.dataset, "Detection data: 'shapes' (built-in synthetic boxes), 'voc:PATH' (VOC "
                                          "layout with ImageSets/Main/<split>.txt lists, by default train.txt and "
                                          "val.txt) or a prepared tensorflow-datasets name such as 'voc/2007'.")
flags.DEFINE_string("data_dir", D.data_dir, "tensorflow-datasets data directory.")
flags.DEFINE_string("train_split", D.train_split, "Split trained on (e.g. 'trainval' for VOC07's trainval -> test); "
                                                  "the class names come from it.")
flags.DEFINE_string("val_split", D.val_split, "Split evaluated every epoch and at the end (mAP, per-class AP, the "
                                              "predictions figure) and choosing best_weights.npz; a test split "
                                              "('test...') is reported as test_* and chooses no weights (the last "
                                              "epoch is the result). Must differ from --train_split.")
flags.DEFINE_integer("input_size", D.input_size, "Square network input size (a multiple of 32).", lower_bound=32)
flags.DEFINE_integer("epochs", D.epochs, "Training epochs (one pass over the training images each).", lower_bound=1)
flags.DEFINE_integer("batch_size", D.batch_size, "Global batch size.", lower_bound=1)
flags.DEFINE_enum("optimizer", D.optimizer, CHOICES["optimizer"], "Optimizer: Adam, or SGD with momentum 0.9 "
                                                                  "(YOLOv3's).")
flags.DEFINE_float("lr", D.lr, "Peak learning rate (after the warm-up, before the steps of --lr_steps).")
flags.DEFINE_list("lr_steps", list(D.lr_steps), "Fractions of the training steps at which the learning rate is "
                                                "multiplied by 0.1 (YOLOv3: 0.8,0.9); empty for a constant rate.")
flags.DEFINE_float("warmup_epochs", D.warmup_epochs, "Epochs of linear learning-rate warm-up from 0 (may be "
                                                     "fractional; 0: none).", lower_bound=0.0)
flags.DEFINE_integer("freeze_epochs", D.freeze_epochs, "Keep the backbone frozen (no gradient, BatchNorm in "
                                                       "inference mode) for the first N epochs, then train everything.",
                     lower_bound=0)
flags.DEFINE_float("weight_decay", D.weight_decay, "Decoupled weight decay on conv kernels (w -= lr * wd * w each "
                                                   "step).", lower_bound=0.0)
flags.DEFINE_enum("anchors", D.anchors, CHOICES["anchors"], "Anchors: 'kmeans' (9 clusters of the training boxes at "
                                                            "the input scale) or 'default' (YOLOv3's COCO anchors "
                                                            "scaled to --input_size).")
flags.DEFINE_enum("box_loss", D.box_loss, CHOICES["box_loss"], "Box loss: YOLOv3's 'xywh' (BCE on centres, L2 on log "
                                                               "sizes) or 'giou' (1 - GIoU).")
flags.DEFINE_integer("head_width", D.head_width, "Head width at stride 32 (half at 16, a quarter at 8; default 128), "
                                                 "a multiple of 4.", lower_bound=4)
flags.DEFINE_integer("bn_recal_batches", D.bn_recal_batches, "Before every evaluation, set the BatchNorm moving "
                     "statistics of the trainable layers to the exact average over this many batches of training "
                     "images (letterboxed as for evaluation, in order): 'precise BN'. The exponential averages lag "
                     "behind the weights in short runs; a from-scratch backbone then scores nothing in inference "
                     "mode. 0: off.", lower_bound=0)
flags.DEFINE_integer("limit", D.limit, "Use only the first N training images (quick runs).", lower_bound=1)
flags.DEFINE_integer("val_limit", D.val_limit, "Use only the first N validation images.", lower_bound=1)
flags.DEFINE_enum("strategy", D.strategy, CHOICES["strategy"], "tf.distribute strategy (training/distribute.py).")
flags.DEFINE_integer("cpu_replicas", D.cpu_replicas, "With --strategy=mirrored on a host without GPUs: logical CPU "
                                                     "devices to replicate over.", lower_bound=1)
flags.DEFINE_integer("seed", D.seed, "Seed of initialisation, data order and augmentation, k-means.")
flags.DEFINE_enum("on_error", D.on_error, CHOICES["on_error"], "Bad annotations: 'raise' (one-line error naming the "
                                                               "file) or 'skip' (drop them, one warning with counts).")
flags.DEFINE_enum("export", D.export, CHOICES["export"], "TFLite export after training: 'none', 'float32', or 'int8' "
                                                         "(full-integer, calibrated on training images; the float "
                                                         "file too).")
flags.DEFINE_integer("representative_images", D.representative_images, "Training images calibrating the int8 export.",
                     lower_bound=1)
flags.DEFINE_bool("progress", D.progress, "Show a progress bar.")
flags.DEFINE_string("out_dir", D.out_dir, "Directory for every output and the resumable state.")


def config_from_flags() -> FinetuneConfig:
    """The parsed flags as a `FinetuneConfig` (one flag per field, same name)."""
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(FinetuneConfig)}
    return FinetuneConfig(**{**values, "lr_steps": tuple(FLAGS.lr_steps)})


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    run(config_from_flags())  # a diverged run (NonFiniteLoss, a common.errors.Diverged): one line, exit 2


if __name__ == "__main__":
    run_cli(main)
