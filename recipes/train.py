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
training/core.py). Rerunning the same command after a kill continues from it: Keras restores at epoch
granularity, so an epoch cut short is replayed from its start with the checkpoint's weights (the optimizer step is
set back to that epoch's start, keeping the schedule aligned). The data order restarts with the process (not
replayed bit-exactly). Other settings than the checkpoint's are refused. The checkpoint is deleted after the outputs
are written.

Writes under ``--out_dir``: ``weights.npz`` (zoo format), ``model_card.json`` (spec, data, steps, optimizer, metrics,
sha256 of the weights, versions, strategy), ``history.json`` (one entry per epoch), ``train_settings.json``,
``tensorboard/``; ``backup/`` while a run is unfinished.
"""
from __future__ import annotations

import os
import sys
import time

from absl import flags

from inputs.classification import AUGMENTS
from recipes._cli import UsageError, run
from training.distribute import STRATEGIES

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name (python -m zoo list) or path of a spec .json (e.g. a search's "
                                   "derived.json).")
flags.DEFINE_string("weights", "", "Initial weights: '' (random init, train from scratch), a zoo tag such as "
                                   "'imagenet', or a .npz path (zoo format, e.g. derived_init.npz). With another "
                                   "class count than the data's, all but the classifier are loaded.")
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder "
                                         "images, PATH/train and PATH/test when present) or a tensorflow-datasets "
                                         "name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
flags.DEFINE_integer("input_size", None, "Square input size (default: the spec's input size).", lower_bound=8)
flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Global batch size (split over the replicas; must divide evenly).",
                     lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Optimizer steps per epoch (default: one pass over the training "
                                              "examples, i.e. examples // batch_size).", lower_bound=1)
flags.DEFINE_integer("limit", None, "Use only the first N training examples (quick runs).", lower_bound=1)
flags.DEFINE_integer("val_limit", None, "Evaluate on the first N examples of the test split after every epoch "
                                        "(default: all of them; 0: no validation).", lower_bound=0)
flags.DEFINE_enum("augment", "standard", list(AUGMENTS), "Training augmentation: 'standard' (random crop + flip), "
                                                         "'paper' (plus colour jitter) or 'none'.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "rmsprop"], "Optimizer: SGD with momentum or RMSProp.")
flags.DEFINE_float("lr", 0.05, "Peak learning rate (reached after the warm-up, then cosine-decayed to 0).",
                   lower_bound=0.0)
flags.DEFINE_float("momentum", 0.9, "Momentum of SGD or RMSProp.", lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_bool("nesterov", False, "Nesterov momentum (SGD).")
flags.DEFINE_float("rho", 0.9, "RMSProp decay of the squared-gradient average.", lower_bound=0.0, upper_bound=0.9999)
flags.DEFINE_float("epsilon", 1e-3, "RMSProp epsilon (TF EfficientNet/MixNet recipes use 1e-3).", lower_bound=0.0)
flags.DEFINE_float("warmup_epochs", 1.0, "Epochs of linear warm-up from 0 to --lr (may be fractional; 0: none).",
                   lower_bound=0.0)
flags.DEFINE_float("weight_decay", 4e-5, "Decoupled weight decay: each step w -= lr * weight_decay * w on conv and "
                                         "dense kernels (not BatchNorm or biases). Not an L2 loss term: with "
                                         "momentum m it is about 1/(1-m) times weaker than L2 of the same value.",
                   lower_bound=0.0)
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of the cross-entropy.", lower_bound=0.0,
                   upper_bound=0.99)
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

# Settings that must match to resume from the checkpoint in --out_dir (the spec is compared by content).
_RESUME_KEYS = ("model", "weights", "dataset", "input_size", "epochs", "batch_size", "steps_per_epoch", "limit",
                "augment", "optimizer", "lr", "momentum", "nesterov", "rho", "epsilon", "warmup_epochs",
                "weight_decay", "label_smoothing", "seed")


class _Plan:
    """What the flags resolve to before TensorFlow is imported."""

    def __init__(self, spec, spec_file, size, weights_path, init_arrays, classes):
        self.spec, self.spec_file, self.size = spec, spec_file, size
        self.weights_path, self.init_arrays, self.classes = weights_path, init_arrays, classes


def _settings(spec) -> dict:
    from models.spec import encode
    return {**{k: getattr(FLAGS, k) for k in _RESUME_KEYS}, "spec": encode(spec)}


def _check_flags() -> _Plan:
    """Everything checkable without TensorFlow."""
    import json

    import zoo
    from inputs import classification as data
    from inputs.classification import validate
    from models.spec import check_input_size
    from training import weights as W

    spec = zoo.get_spec(FLAGS.model)
    spec_file = zoo.spec_path(FLAGS.model)
    size = FLAGS.input_size or spec.input.size
    check_input_size(spec, size, "--input_size")
    if FLAGS.lr <= 0:
        raise UsageError(f"--lr={FLAGS.lr}: must be positive")
    if FLAGS.warmup_epochs >= FLAGS.epochs:
        raise UsageError(f"--warmup_epochs={FLAGS.warmup_epochs:g} must be below --epochs={FLAGS.epochs} "
                         "(--warmup_epochs=0 for no warm-up)")
    if FLAGS.strategy == "mirrored" and FLAGS.cpu_replicas > 1 and FLAGS.batch_size % FLAGS.cpu_replicas:
        raise UsageError(f"--batch_size={FLAGS.batch_size} does not split over --cpu_replicas={FLAGS.cpu_replicas}")
    if FLAGS.strategy != "mirrored" and FLAGS.cpu_replicas > 1:
        raise UsageError(f"--cpu_replicas={FLAGS.cpu_replicas} needs --strategy=mirrored")
    weights_path = W.resolve_weights(spec, FLAGS.weights)
    arrays = W.read_weights(weights_path) if weights_path else None
    validate(FLAGS.dataset, FLAGS.data_dir)
    if FLAGS.val_limit != 0:
        data.check_eval_split(FLAGS.dataset, "--val_limit=0 to train without validation")
    classes = data.known_classes(FLAGS.dataset)
    if classes is not None and classes < 2:
        raise UsageError(f"--dataset={FLAGS.dataset}: {classes} class; classification needs at least 2")
    if os.path.exists(FLAGS.out_dir) and not os.path.isdir(FLAGS.out_dir):
        raise UsageError(f"--out_dir={FLAGS.out_dir}: exists and is not a directory")
    saved = os.path.join(FLAGS.out_dir, "train_settings.json")
    if os.path.isdir(os.path.join(FLAGS.out_dir, "backup")) and os.path.exists(saved):
        try:
            with open(saved) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"{saved}: unreadable ({e}); remove {FLAGS.out_dir}/backup to start afresh") from None
        new = _settings(spec)
        diff = sorted(k for k in new if old.get(k) != new[k])
        if diff:
            raise UsageError(f"--out_dir={FLAGS.out_dir} holds an unfinished run with other settings "
                             f"({', '.join(diff)}); rerun it with the same flags to resume, or use a new --out_dir")
    return _Plan(spec, spec_file, size, weights_path, arrays, classes)


def _chief_dir(strategy, out_dir: str) -> tuple[str, bool]:
    """Where this worker writes: ``out_dir`` for the chief (every strategy but multi-worker has only a chief),
    a scratch folder inside it for the other workers of a multi-worker cluster (deleted at the end)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if FLAGS.strategy != "multi_worker" or resolver is None or not resolver.task_type:
        return out_dir, True
    cluster = resolver.cluster_spec().as_dict()
    chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in cluster)
    return (out_dir, True) if chief else (os.path.join(out_dir, f".worker{resolver.task_id}"), False)


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    plan = _check_flags()
    started = time.time()

    from training.distribute import make_strategy
    strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas, FLAGS.tpu)  # before any other TensorFlow work

    import shutil

    import keras
    import numpy as np
    import tensorflow as tf

    import zoo
    from common import io as io_lib
    from inputs.classification import load
    from models.spec import encode
    from models.weights import save_npz, sha256
    from training import weights as W
    from training.backup import backup_callback

    replicas = strategy.num_replicas_in_sync
    if FLAGS.batch_size % replicas:
        raise UsageError(f"--batch_size={FLAGS.batch_size} does not split over {replicas} replicas")
    keras.utils.set_random_seed(FLAGS.seed)
    out_dir, chief = _chief_dir(strategy, FLAGS.out_dir)

    train_ds, info = load(FLAGS.dataset, "train", image_size=plan.size, batch_size=FLAGS.batch_size, training=True,
                          data_dir=FLAGS.data_dir, seed=FLAGS.seed, augment=FLAGS.augment, repeat=True,
                          limit=FLAGS.limit)
    classes = info.num_classes
    if classes < 2:
        raise UsageError(f"--dataset={FLAGS.dataset}: {classes} class; classification needs at least 2")
    val_ds = val_info = None
    if FLAGS.val_limit != 0:
        val_ds, val_info = load(FLAGS.dataset, "test", image_size=plan.size, batch_size=FLAGS.batch_size,
                                training=False, data_dir=FLAGS.data_dir, limit=FLAGS.val_limit)
    one_hot = lambda x, y: (x, tf.one_hot(y, classes))  # noqa: E731 — label smoothing needs dense targets
    train_ds = train_ds.map(one_hot, num_parallel_calls=tf.data.AUTOTUNE)
    if val_ds is not None:
        val_ds = val_ds.map(one_hot, num_parallel_calls=tf.data.AUTOTUNE)
    steps = FLAGS.steps_per_epoch or max(1, info.num_examples // FLAGS.batch_size)
    total_steps = FLAGS.epochs * steps
    warmup_steps = int(round(FLAGS.warmup_epochs * steps))

    with strategy.scope():
        model = zoo.build(FLAGS.model, weights=None, classes=classes, input_size=plan.size)
        init = {"weights": FLAGS.weights, "path": plan.weights_path, "loaded": 0, "skipped": []}
        if plan.init_arrays is not None:
            init.update(W.load_init_weights(model, plan.init_arrays, plan.weights_path))
            init["sha256"] = sha256(plan.weights_path)
            if init["skipped"]:
                io_lib.eprint(f"{plan.weights_path}: classifier not loaded (the data has {classes} classes); "
                         f"{init['loaded']} other weights loaded")
        if warmup_steps:
            schedule = keras.optimizers.schedules.CosineDecay(
                0.0, total_steps - warmup_steps, alpha=0.0, warmup_target=FLAGS.lr, warmup_steps=warmup_steps)
        else:
            schedule = keras.optimizers.schedules.CosineDecay(FLAGS.lr, total_steps, alpha=0.0)
        wd = FLAGS.weight_decay or None
        if FLAGS.optimizer == "sgd":
            optimizer = keras.optimizers.SGD(schedule, momentum=FLAGS.momentum, nesterov=FLAGS.nesterov,
                                             weight_decay=wd)
        else:
            optimizer = keras.optimizers.RMSprop(schedule, rho=FLAGS.rho, momentum=FLAGS.momentum,
                                                 epsilon=FLAGS.epsilon, weight_decay=wd)
        if wd:  # decay kernels only: BatchNorm gamma/beta and biases are the 1-D variables
            optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
        metrics = [keras.metrics.CategoricalAccuracy(name="top1")]
        if classes >= 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
        model.compile(optimizer=optimizer, metrics=metrics,
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                label_smoothing=FLAGS.label_smoothing))

    os.makedirs(out_dir, exist_ok=True)  # only now: bad data or flags above leave no trace
    if chief:
        io_lib.write_json(os.path.join(FLAGS.out_dir, "train_settings.json"), _settings(plan.spec))
    backup_dir = os.path.join(out_dir, "backup")
    backup = backup_callback(backup_dir, FLAGS.checkpoint_every, steps, announce=io_lib.eprint)
    callbacks = [backup]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"), write_graph=False,
                                                     profile_batch=0))
    model.fit(train_ds, epochs=FLAGS.epochs, steps_per_epoch=steps, validation_data=val_ds, callbacks=callbacks,
              shuffle=False,  # tf.data shuffles (seeded) in inputs.classification
              verbose=1 if FLAGS.progress else 2)

    history = backup.history
    if len(history) != FLAGS.epochs:
        raise RuntimeError(f"history has {len(history)} epochs, expected {FLAGS.epochs}")
    if not chief:  # non-chief workers of a multi-worker cluster: nothing to keep
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    last = history[-1]
    metric_names = {"loss": "train_loss", "top1": "train_top1", "top5": "train_top5", "val_loss": "val_loss",
                    "val_top1": "val_top1", "val_top5": "val_top5"}
    final = {new: last[old] for old, new in metric_names.items() if old in last}
    weights_file = os.path.join(out_dir, "weights.npz")
    digest = save_npz(model, weights_file)
    io_lib.write_json(os.path.join(out_dir, "history.json"), history)
    opt = {"name": FLAGS.optimizer, "lr": FLAGS.lr, "momentum": FLAGS.momentum,
           "schedule": "linear warm-up from 0 to lr over warmup_steps, then cosine decay to 0 at the last step "
                       "(keras CosineDecay, per optimizer step)",
           "warmup_epochs": FLAGS.warmup_epochs, "warmup_steps": warmup_steps, "weight_decay": FLAGS.weight_decay,
           "weight_decay_mode": "decoupled (w -= lr * weight_decay * w per step), kernels only",
           "label_smoothing": FLAGS.label_smoothing}
    if FLAGS.optimizer == "sgd":
        opt["nesterov"] = FLAGS.nesterov
    else:
        opt.update(rho=FLAGS.rho, epsilon=FLAGS.epsilon)
    card = {
        "model": plan.spec.name, "file": "weights.npz", "sha256": digest,
        "spec_path": os.path.abspath(plan.spec_file), "spec": encode(plan.spec),
        "dataset": FLAGS.dataset, "input_size": plan.size, "classes": classes,
        "class_names": list(info.class_names),
        "data": {"train_split": "train", "train_examples": info.num_examples, "limit": FLAGS.limit,
                 "augment": FLAGS.augment, "val_split": "test" if val_info else None,
                 "val_examples": val_info.num_examples if val_info else 0, "val_limit": FLAGS.val_limit},
        "epochs": FLAGS.epochs, "steps_per_epoch": steps, "steps": total_steps, "batch_size": FLAGS.batch_size,
        "optimizer": opt, "init": init, "seed": FLAGS.seed,
        "metrics": final,
        "strategy": FLAGS.strategy, "replicas": replicas,
        "resumed": backup.restored,
        "wall_time_s": round(time.time() - started, 3), "train_time_s": round(backup.elapsed(), 3),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "produced_by": "python -m recipes.train " + " ".join(sys.argv[1:]),
    }
    io_lib.write_json(os.path.join(out_dir, "model_card.json"), card)
    shutil.rmtree(backup_dir, ignore_errors=True)
    val = (f"val top-1 {final['val_top1']:.4f}" + (f", top-5 {final['val_top5']:.4f}" if "val_top5" in final else "")
           if "val_top1" in final else "no validation")
    print(f"{plan.spec.name}: {FLAGS.epochs} epochs x {steps} steps, train loss {final['train_loss']:.4f}, {val} "
          f"-> {weights_file} (sha256 {digest[:12]}…)")


if __name__ == "__main__":
    run(main)
