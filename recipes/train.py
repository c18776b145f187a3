"""Retrain a spec (zoo name or spec path) from scratch or from weights, under any tf.distribute strategy.

    python -m recipes.train --model=runs/mk_8m/derived.json --dataset=folder:../shared/data/cifar10_subset \\
        --epochs=30 --batch_size=128 --out_dir=runs/train_mk8m
    python -m recipes.train --model=mixnet_s --weights=runs/mk/derived_init.npz --input_size=32 …
    python -m recipes.train --model=efficientnet_lite0 --weights=imagenet --dataset=folder:… --input_size=96 …
    python -m recipes.train --flagfile=my_run.flags                         # absl flagfile

Optimisation: SGD (momentum, optional Nesterov) or RMSProp; the learning rate rises linearly from 0 to ``--lr`` over
``--warmup_epochs`` and then follows a cosine decay to 0 at the last step (E-DNAS Eq. 16; Keras' ``CosineDecay`` with
``warmup_target``), per optimizer step. ``--weight_decay`` is *decoupled* (the optimizer's own ``weight_decay``:
each step ``w ← w − lr·wd·w``, outside the gradient and the momentum; not an L2 term in the loss), applied to
convolution and dense kernels only (BatchNorm γ/β and biases are excluded). Cross-entropy on logits with
``--label_smoothing``.

Weights: ``--weights`` is '' (random init), a zoo tag (``imagenet``) or a ``.npz`` keyed ``layer/variable`` (the
zoo format, e.g. a search's ``derived_init.npz``). When the data has another class count than the file's
classifier, every weight but the classifier is loaded and the classifier starts fresh (recorded in the model card).

Distribution: ``--strategy=default|mirrored|multi_worker|tpu`` (training/distribute.py); the model is built and
compiled inside ``strategy.scope()`` and ``model.fit`` distributes the batches (``--batch_size`` is global).

Resume: a checkpoint (weights, optimizer state, epoch, history) is written to ``OUT/backup/`` every
``--checkpoint_every`` steps and at every epoch end (a ``keras.callbacks.BackupAndRestore`` subclass, see
training/backup.py). Rerunning the same command after a kill continues from it: Keras restores at epoch
granularity, so an epoch cut short is replayed from its start with the checkpoint's weights (the optimizer step is
set back to that epoch's start, keeping the schedule aligned). The data order restarts with the process (not
replayed bit-exactly). Other settings than the checkpoint's are refused. The checkpoint is deleted after the outputs
are written.

Writes under ``--out_dir``: ``weights.npz`` (zoo format), ``model_card.json`` (spec, data, steps, optimizer, metrics,
sha256 of the weights, versions, strategy), ``history.json`` (one entry per epoch), ``train_settings.json``,
``tensorboard/``; ``backup/`` while a run is unfinished.
"""
from __future__ import annotations

import dataclasses
import sys

from absl import flags

from inputs.classification import AUGMENTS
from recipes.cli import UsageError, define_distillation, define_on_bad_image, run
from training.distribute import STRATEGIES
from workflows import train
from workflows.train import TrainConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name (python -m zoo list) or path of a spec .json (e.g. a search's "
                                   "derived.json).")
flags.DEFINE_string("weights", "", "Initial weights: '' (random init, train from scratch), a zoo tag such as "
                                   "'imagenet', or a .npz path (zoo format, e.g. derived_init.npz). With another "
                                   "class count than the data's, all but the classifier are loaded.")
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder "
                                         "images, PATH/train and PATH/test when present) or a tensorflow-datasets "
                                         "name; 'tsv:PATH': a labels.tsv file list (fixed 300-image test split).")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
define_on_bad_image()
flags.DEFINE_integer("input_size", None, "Square input size (default: the spec's input size).", lower_bound=8)
flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Global batch size (split over the replicas; must divide evenly).",
                     lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Optimizer steps per epoch (default: one pass over the training "
                                              "examples, i.e. examples // batch_size).", lower_bound=1)
flags.DEFINE_integer("limit", None, "Use only the first N training examples (quick runs).", lower_bound=1)
flags.DEFINE_integer("val_limit", None, "Evaluate on the first N examples of the test split after every epoch "
                                        "(default: all of them; 0: no validation).", lower_bound=0)
flags.DEFINE_integer("val_freq", 1, "Validate every N epochs (N must divide --epochs, so the last epoch is always "
                                    "validated).", lower_bound=1)
flags.DEFINE_enum("augment", "standard", list(AUGMENTS), "Training augmentation: 'standard' (random crop + flip), "
                                                         "'paper' (plus colour jitter) or 'none'.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "rmsprop"], "Optimizer: SGD with momentum or RMSProp.")
flags.DEFINE_float("lr", 0.05, "Peak learning rate (reached after the warm-up, then cosine-decayed to 0).",
                   lower_bound=0.0)
flags.DEFINE_float("momentum", 0.9, "Momentum of SGD or RMSProp.", lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_bool("nesterov", False, "Nesterov momentum (SGD).")
flags.DEFINE_float("rho", 0.9, "RMSProp decay of the squared-gradient average.", lower_bound=0.0, upper_bound=0.9999)
flags.DEFINE_float("epsilon", 1e-3, "RMSProp epsilon (TF EfficientNet/MixNet recipes use 1e-3).", lower_bound=0.0)
flags.DEFINE_float("warmup_epochs", None, "Epochs of linear warm-up from 0 to --lr (may be fractional; 0: none; "
                   "default 1, or 0 for a one-epoch run).", lower_bound=0.0)
flags.DEFINE_float("weight_decay", 4e-5, "Decoupled weight decay: each step w -= lr * weight_decay * w on conv and "
                                         "dense kernels (not BatchNorm or biases). Not an L2 loss term: with "
                                         "momentum m it is about 1/(1-m) times weaker than L2 of the same value.",
                   lower_bound=0.0)
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy (not used with --teacher).",
                   lower_bound=0.0, upper_bound=0.99)
define_distillation()
flags.DEFINE_string("reparam", "", "E-DNAS additive kernel merging (Eq. 1-2): train every depthwise conv as parallel "
                                   "kernels of these sizes (up to the spec's; e.g. 1,3,5,7), each with its own "
                                   "BatchNorm, summed; the saved weights merge them into the spec's one kernel "
                                   "(deployed model and latency unchanged). Empty: plain training.")
flags.DEFINE_integer("checkpoint_every", 200, "Write the resumable checkpoint every N optimizer steps (and at every "
                                              "epoch end).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, data order and augmentation.")
flags.DEFINE_string("out_dir", "runs/train", "Directory for weights, model card, history, TensorBoard logs and the "
                                             "resumable checkpoint.")
flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy (training/distribute.py).")
flags.DEFINE_integer("cpu_replicas", 1, "With --strategy=mirrored on a host without GPUs: logical CPU devices to "
                                        "replicate over.", lower_bound=1)
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu (empty: the local TPU).")
flags.DEFINE_bool("progress", True, "Show a progress bar (Keras verbose=1; otherwise one line per epoch).")
flags.mark_flag_as_required("model")


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "produced_by"]
    config = TrainConfig(**{k: getattr(FLAGS, k) for k in fields},
                         produced_by="python -m recipes.train " + " ".join(sys.argv[1:]))
    result = train.run(config)
    if result.card is None:  # a non-chief worker of a multi-worker cluster
        return
    final, card = result.card["metrics"], result.card
    val = (f"val top-1 {final['val_top1']:.4f}" + (f", top-5 {final['val_top5']:.4f}" if "val_top5" in final else "")
           if "val_top1" in final else "no validation")
    print(f"{card['model']}: {config.epochs} epochs x {card['steps_per_epoch']} steps, train loss "
          f"{final['train_loss']:.4f}, {val} -> {result.weights_file} (sha256 {card['sha256'][:12]}…)")


if __name__ == "__main__":
    run(main)
