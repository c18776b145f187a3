"""Retraining a spec under a tf.distribute strategy (``python -m recipes.train``): the config, its TensorFlow-free
validation, and the run — tf.data input, optimizer and schedule, ``model.fit`` with a resumable backup, and the
outputs (``weights.npz``, ``model_card.json``, ``history.json``, ``train_settings.json``, ``tensorboard/``).

The learning rate rises linearly from 0 to ``lr`` over ``warmup_epochs`` and then follows a cosine decay to 0 at the
last step (E-DNAS Eq. 16; Keras' ``CosineDecay`` with ``warmup_target``). Weight decay is decoupled (the optimizer's
``weight_decay``) and applies to convolution and dense kernels only. Resume: ``training.backup.backup_callback``
under ``OUT/backup/``; a rerun into a directory holding an unfinished run (``backup/``) with other settings is refused
(`common.rundir.RunDir`, settings file ``train_settings.json``).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

from common.checks import (
    DECAY_MAX,
    LR_MAX,
    ConfigError,
    check_activation_memory,
    check_at_least,
    check_at_most,
    check_one_of,
    check_out_dir,
    check_replicas,
    check_rgb_spec,
)
from common.rundir import RunDir

SETTINGS_FILE = "train_settings.json"
# What a run writes in --out_dir besides SETTINGS_FILE: checked before any work (common.checks.check_run_outputs).
OUT_FILES = ("weights.npz", "model_card.json", "history.json", "backup/latest.weights.h5",
             "backup/training_metadata.json")  # names inside the run's own folders count too
OUT_DIRS = ("backup", "tensorboard", "tensorboard/train", "tensorboard/validation")
# Settings that must match to resume from the checkpoint in out_dir (the spec is compared by content).
RESUME_KEYS = ("model", "weights", "dataset", "input_size", "epochs", "batch_size", "steps_per_epoch", "limit",
               "augment", "optimizer", "lr", "momentum", "nesterov", "rho", "epsilon", "warmup_epochs",
               "weight_decay", "label_smoothing", "seed", "teacher", "temperature", "mix", "mix_alpha", "reparam")
# Identity keys added later: a settings file written before them is read with the value every run had then.
ADDED_SETTINGS = {"teacher": "", "temperature": 1.0, "mix": "none", "mix_alpha": 0.2, "reparam": ""}
_METRIC_NAMES = {"loss": "train_loss", "top1": "train_top1", "top5": "train_top5", "val_loss": "val_loss",
                 "val_top1": "val_top1", "val_top5": "val_top5"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run; the fields are the flags of ``recipes.train`` (see its ``--help``)."""

    model: str
    weights: str = ""
    dataset: str = "shapes"
    data_dir: str | None = None
    on_bad_image: str = "raise"  # folder: images that cannot be decoded: raise (naming the file) or skip
    input_size: int | None = None
    epochs: int = 10
    batch_size: int = 64
    steps_per_epoch: int | None = None
    limit: int | None = None
    val_limit: int | None = None
    val_freq: int = 1
    augment: str = "standard"
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    rho: float = 0.9
    epsilon: float = 1e-3
    warmup_epochs: float | None = None  # None: 1 epoch, or none when the run has a single epoch
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    teacher: str = ""  # MODEL:WEIGHTS of a frozen teacher: distillation replaces the labels (training.distill)
    temperature: float = 1.0  # distillation temperature T
    mix: str = "none"  # mixup / cutmix / both of every training batch (training.distill.mix_batch)
    mix_alpha: float = 0.2  # Beta(α, α) of the mixing ratio
    reparam: str = ""  # e.g. "1,3,5,7": train every depthwise conv as parallel kernels + BNs, merged at the end
    checkpoint_every: int = 200
    seed: int = 0
    out_dir: str = "runs/train"
    strategy: str = "default"
    cpu_replicas: int = 1
    tpu: str = ""
    progress: bool = True
    produced_by: str = ""  # the command line recorded in the model card

    def __post_init__(self):
        if self.warmup_epochs is None:  # resolved here, so the run's identity holds the number used
            object.__setattr__(self, "warmup_epochs", 1.0 if isinstance(self.epochs, int) and self.epochs > 1 else 0.0)


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """What a config resolves to before TensorFlow is imported."""

    spec: object
    spec_file: str
    size: int
    weights_path: str | None
    init_arrays: dict | None
    classes: int | None
    run_dir: RunDir
    teacher: tuple | None = None  # (spec, weights path, arrays) of --teacher


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """``card`` and ``history`` as written; ``weights_file`` is None on a non-chief worker (which keeps nothing)."""

    weights_file: str | None
    card: dict | None
    history: list


def settings(config: TrainConfig, spec) -> dict:
    """The identity of a run (``train_settings.json``)."""
    from models.spec import encode
    return {**{k: getattr(config, k) for k in RESUME_KEYS}, "spec": encode(spec)}


def validate(config: TrainConfig) -> TrainPlan:
    """Everything checkable without TensorFlow.

    Raises:
        InputError (subclasses): a bad value, named by its flag; `SettingsMismatch` when ``out_dir`` holds an
        unfinished run with other settings.
    """
    import zoo
    from inputs import classification as data
    from inputs.classification import AUGMENTS
    from models.spec import check_input_size
    from training import weights as W
    from training.distribute import STRATEGIES

    check_at_least(epochs=(config.epochs, 1), batch_size=(config.batch_size, 1), input_size=(config.input_size, 8),
                   steps_per_epoch=(config.steps_per_epoch, 1), limit=(config.limit, 1),
                   val_limit=(config.val_limit, 0), val_freq=(config.val_freq, 1),
                   checkpoint_every=(config.checkpoint_every, 1),
                   cpu_replicas=(config.cpu_replicas, 1), warmup_epochs=(config.warmup_epochs, 0.0),
                   weight_decay=(config.weight_decay, 0.0), label_smoothing=(config.label_smoothing, 0.0))
    check_at_most(lr=(config.lr, LR_MAX), weight_decay=(config.weight_decay, DECAY_MAX), epsilon=(config.epsilon, 1.0))
    if config.epochs % config.val_freq:
        raise ConfigError(f"--val_freq={config.val_freq} must divide --epochs={config.epochs} (the last epoch is "
                          "always validated)")
    check_one_of(augment=(config.augment, AUGMENTS), optimizer=(config.optimizer, ("sgd", "rmsprop")),
                 strategy=(config.strategy, STRATEGIES))
    spec = zoo.get_spec(config.model)
    spec_file = zoo.spec_path(config.model)
    size = config.input_size or spec.input.size
    check_input_size(spec, size, "--input_size")
    check_activation_memory(spec, size, config.batch_size)
    check_rgb_spec(spec)
    if config.lr <= 0:
        raise ConfigError(f"--lr={config.lr}: must be positive")
    if config.warmup_epochs >= config.epochs:
        raise ConfigError(f"--warmup_epochs={config.warmup_epochs:g} must be below --epochs={config.epochs} "
                          "(--warmup_epochs=0 for no warm-up)")
    check_replicas(config.strategy, config.cpu_replicas, config.batch_size)
    if config.strategy != "mirrored" and config.cpu_replicas > 1:
        raise ConfigError(f"--cpu_replicas={config.cpu_replicas} needs --strategy=mirrored")
    if config.reparam:
        try:  # (search.reparam imports Keras: checked here without it)
            sizes = [int(k) for k in config.reparam.split(",")]
        except ValueError:
            sizes = []
        if not sizes or any(k < 1 or k % 2 == 0 for k in sizes) or len(set(sizes)) != len(sizes):
            raise ConfigError(f"--reparam={config.reparam}: need distinct odd kernel sizes, e.g. 1,3,5,7")
        def depthwise_kernels(b):  # a ShuffleNetV2 unit's choice is its kernel size ("x": 3×3 convs)
            return b.kernels if hasattr(b, "kernels") else (3 if b.choice == "x" else int(b.choice),)
        kmax = max((k for _, _, b in spec.blocks() for k in depthwise_kernels(b)), default=0)
        unused = [k for k in sizes if k > kmax]
        if unused:
            raise ConfigError(f"--reparam={config.reparam}: {','.join(map(str, unused))} exceed(s) the largest "
                              f"depthwise kernel of {config.model} ({kmax}×{kmax}) and would train nowhere")
        if config.weights:
            raise ConfigError(f"--reparam trains the parallel-kernel form from scratch; it takes no --weights "
                              f"(got --weights={config.weights})")
        if spec.padding != "same" and any(getattr(b, "stride", 1) == 2 for _, _, b in spec.blocks()):
            raise ConfigError(f"--reparam: {config.model} uses symmetric padding with stride 2, which the "
                              "re-parameterised depthwise convs do not support")
    weights_path = W.resolve_weights(spec, config.weights)
    arrays = W.read_weights(weights_path) if weights_path else None
    # cheap checks before the dataset's images are decoded
    check_out_dir(config.out_dir, own=SETTINGS_FILE, files=OUT_FILES, dirs=OUT_DIRS)
    data.validate(config.dataset, config.data_dir, config.on_bad_image)
    if config.val_limit != 0:
        data.check_eval_split(config.dataset, "pass --val_limit=0 to train without validation")
    classes = data.known_classes(config.dataset)
    if classes is not None and classes < 2:
        raise ConfigError(f"--dataset={config.dataset}: {classes} class; classification needs at least 2")
    teacher = _check_teacher(config, classes, size)
    run_dir = RunDir(config.out_dir, settings(config, spec), settings_file=SETTINGS_FILE, defaults=ADDED_SETTINGS,
                     files=OUT_FILES, dirs=OUT_DIRS)
    if os.path.isdir(run_dir.file("backup")):  # only an unfinished run binds the directory to its settings
        run_dir.check(what="an unfinished run")
    return TrainPlan(spec, spec_file, size, weights_path, arrays, classes, run_dir, teacher)


def _check_teacher(config: TrainConfig, classes: int | None, size: int):
    from training.distill import check_teacher
    return check_teacher(config.teacher, config.mix, config.temperature, config.mix_alpha, config.dataset, classes,
                         size)


def _distillation_pipeline(config: TrainConfig, plan, train_ds, classes: int):
    """`training.distill.pipeline` with this run's settings: ``(dataset, teacher model or None)``."""
    from training.distill import pipeline
    return pipeline(train_ds, plan.teacher, config.teacher, config.mix, config.mix_alpha, config.temperature,
                    config.seed, classes, plan.size)


def _chief_dir(strategy, config: TrainConfig) -> tuple[str, bool]:
    """Where this worker writes: ``out_dir`` for the chief (every strategy but multi-worker has only a chief),
    a scratch folder inside it for the other workers of a multi-worker cluster (deleted at the end)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if config.strategy != "multi_worker" or resolver is None or not resolver.task_type:
        return config.out_dir, True
    cluster = resolver.cluster_spec().as_dict()
    chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in cluster)
    return (config.out_dir, True) if chief else (os.path.join(config.out_dir, f".worker{resolver.task_id}"), False)


def _optimizer(config: TrainConfig, total_steps: int, warmup_steps: int):
    """SGD or RMSProp with linear warm-up then cosine decay to 0, decoupled weight decay (``None`` when 0)."""
    import keras
    if warmup_steps:
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, total_steps - warmup_steps, alpha=0.0, warmup_target=config.lr, warmup_steps=warmup_steps)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(config.lr, total_steps, alpha=0.0)
    wd = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd)
    return keras.optimizers.RMSprop(schedule, rho=config.rho, momentum=config.momentum, epsilon=config.epsilon,
                                    weight_decay=wd)


def _divergence_hint(config: TrainConfig) -> str:
    """What to change when the loss becomes NaN or infinite (`training.backup.divergence_guard`)."""
    knobs = [f"--lr (it is {config.lr:g})"]
    if config.weight_decay:
        knobs.append(f"--weight_decay ({config.weight_decay:g})")
    return (f"lower {' or '.join(knobs)}; no weights or model card were written, and a rerun in the same "
            f"--out_dir starts over")


def _optimizer_card(config: TrainConfig, warmup_steps: int) -> dict:
    opt = {"name": config.optimizer, "lr": config.lr, "momentum": config.momentum,
           "schedule": "linear warm-up from 0 to lr over warmup_steps, then cosine decay to 0 at the last step "
                       "(keras CosineDecay, per optimizer step)",
           "warmup_epochs": config.warmup_epochs, "warmup_steps": warmup_steps, "weight_decay": config.weight_decay,
           "weight_decay_mode": "decoupled (w -= lr * weight_decay * w per step), kernels only",
           "label_smoothing": config.label_smoothing}
    if config.optimizer == "sgd":
        opt["nesterov"] = config.nesterov
    else:
        opt.update(rho=config.rho, epsilon=config.epsilon)
    return opt


def run(config: TrainConfig) -> TrainResult:
    """Validates ``config`` (before TensorFlow is imported), trains, writes the outputs and deletes the backup."""
    plan = validate(config)
    started = time.time()

    from training.distribute import make_strategy, prepare_fit
    strategy = make_strategy(config.strategy, config.cpu_replicas, config.tpu)  # before any other TensorFlow work

    import shutil

    import keras
    import numpy as np
    import tensorflow as tf

    import zoo
    from common.errors import Diverged
    from common.io import eprint, keras_verbose, write_json
    from inputs.classification import load
    from models.spec import encode
    from models.weights import save_npz, sha256
    from training import weights as W
    from training.backup import backup_callback, divergence_guard

    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(f"--batch_size={config.batch_size} does not split over {replicas} replicas")
    keras.utils.set_random_seed(config.seed)
    out_dir, chief = _chief_dir(strategy, config)

    train_ds, info = load(config.dataset, "train", image_size=plan.size, batch_size=config.batch_size, training=True,
                          data_dir=config.data_dir, seed=config.seed, augment=config.augment, repeat=True,
                          limit=config.limit, on_bad_image=config.on_bad_image)
    classes = info.num_classes
    if classes < 2:
        raise ConfigError(f"--dataset={config.dataset}: {classes} class; classification needs at least 2")
    val_ds = val_info = None
    if config.val_limit != 0:
        val_ds, val_info = load(config.dataset, "test", image_size=plan.size, batch_size=config.batch_size,
                                training=False, data_dir=config.data_dir, limit=config.val_limit,
                                on_bad_image=config.on_bad_image)
    one_hot = lambda x, y: (x, tf.one_hot(y, classes))  # noqa: E731 — label smoothing needs dense targets
    train_ds = train_ds.map(one_hot, num_parallel_calls=tf.data.AUTOTUNE)
    train_ds, teacher = _distillation_pipeline(config, plan, train_ds, classes)
    if val_ds is not None:
        val_ds = val_ds.map(one_hot, num_parallel_calls=tf.data.AUTOTUNE)
    steps = config.steps_per_epoch or max(1, info.num_examples // config.batch_size)
    total_steps = config.epochs * steps
    warmup_steps = int(round(config.warmup_epochs * steps))

    with strategy.scope():
        if config.reparam:  # E-DNAS Eq. 1–2: parallel kernels + BNs now, one merged kernel in the saved weights
            from search.reparam import build_reparam
            model = build_reparam(plan.spec, [int(k) for k in config.reparam.split(",")], input_size=plan.size,
                                  classes=classes)
        else:
            model = zoo.build(config.model, weights=None, classes=classes, input_size=plan.size)
        init = {"weights": config.weights, "path": plan.weights_path, "loaded": 0, "skipped": []}
        if plan.init_arrays is not None:
            init.update(W.load_init_weights(model, plan.init_arrays, plan.weights_path))
            init["sha256"] = sha256(plan.weights_path)
            if init["skipped"]:
                eprint(f"{plan.weights_path}: classifier not loaded (the data has {classes} classes); "
                       f"{init['loaded']} other weights loaded")
        optimizer = _optimizer(config, total_steps, warmup_steps)
        if config.weight_decay:  # decay kernels only: BatchNorm gamma/beta and biases are the 1-D variables
            optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
        metrics = [keras.metrics.CategoricalAccuracy(name="top1")]
        if classes >= 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
        if teacher is not None:  # training top-1 is then agreement with the teacher's argmax
            from training.distill import distillation_loss
            loss = distillation_loss(config.temperature)
        else:
            loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
        # weighted: the validation set's last batch may be padded to split over the replicas (pad_for_replicas);
        # its padding rows have weight 0 and never count in val_top1 / val_top5
        model.compile(optimizer=optimizer, weighted_metrics=metrics, loss=loss)
    if val_ds is not None:
        from training.distribute import pad_for_replicas
        val_ds = pad_for_replicas(val_ds, strategy.num_replicas_in_sync)

    prepare_fit(model, strategy)  # multi-worker: Keras' pre-fit build cannot all-reduce a batch
    os.makedirs(out_dir, exist_ok=True)  # only now: bad data or flags above leave no trace
    if chief:
        plan.run_dir.start()
    backup_dir = os.path.join(out_dir, "backup")
    backup = backup_callback(backup_dir, config.checkpoint_every, steps, announce=eprint)
    callbacks = [divergence_guard(_divergence_hint(config)), backup]  # the guard before the save
    if val_ds is not None:
        from training.distribute import padded_loss_scale, rescale_val_loss
        scale = padded_loss_scale(val_info.num_examples, config.batch_size, strategy.num_replicas_in_sync)
        if scale != 1.0:  # a padded last validation batch: Keras' val_loss counted the padding rows
            callbacks.insert(0, rescale_val_loss(scale))
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"), write_graph=False,
                                                     profile_batch=0))
    try:
        model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps, validation_data=val_ds, callbacks=callbacks,
                  validation_freq=config.val_freq,
                  shuffle=False,  # tf.data shuffles (seeded) in inputs.classification
                  verbose=keras_verbose(config.progress))
    except Diverged:  # no weights or card; the checkpoint would only resume into the same divergence
        shutil.rmtree(backup_dir, ignore_errors=True)
        raise

    history = backup.history
    if len(history) != config.epochs:
        raise RuntimeError(f"history has {len(history)} epochs, expected {config.epochs}")
    if not chief:  # non-chief workers of a multi-worker cluster: nothing to keep
        shutil.rmtree(out_dir, ignore_errors=True)
        return TrainResult(None, None, history)
    last = history[-1]
    final = {new: last[old] for old, new in _METRIC_NAMES.items() if old in last}
    weights_file = os.path.join(out_dir, "weights.npz")
    card_file = os.path.join(out_dir, "model_card.json")
    if os.path.exists(card_file):  # a card of earlier weights must never sit beside new ones (read_npz checks it)
        os.unlink(card_file)
    if config.reparam:  # the deployable model: the spec itself with the merged kernels
        from models.weights import assign
        from search.reparam import merge
        merged = merge(model, plan.spec)
        model = zoo.build(config.model, weights=None, classes=classes, input_size=plan.size)
        assign(model, merged, source="merged re-parameterised weights")
    digest = save_npz(model, weights_file, "the trained weights", _divergence_hint(config))
    write_json(os.path.join(out_dir, "history.json"), history)
    card = {
        "model": plan.spec.name, "file": "weights.npz", "sha256": digest,
        "spec_path": os.path.abspath(plan.spec_file), "spec": encode(plan.spec),
        "dataset": config.dataset, "input_size": plan.size, "classes": classes,
        "class_names": list(info.class_names),
        "data": {"train_split": "train", "train_examples": info.num_examples, "limit": config.limit,
                 "augment": config.augment, "val_split": "test" if val_info else None,
                 "val_examples": val_info.num_examples if val_info else 0, "val_limit": config.val_limit},
        "epochs": config.epochs, "steps_per_epoch": steps, "steps": total_steps, "batch_size": config.batch_size,
        "optimizer": _optimizer_card(config, warmup_steps), "init": init, "seed": config.seed,
        "distillation": ({"teacher": config.teacher, "teacher_sha256": sha256(plan.teacher[1]),
                          "temperature": config.temperature, "loss": "T² · KL(teacher ‖ student) on the same "
                          "augmented view; training top-1 = agreement with the teacher"} if plan.teacher else None),
        "mix": {"mode": config.mix, "alpha": config.mix_alpha} if config.mix != "none" else None,
        "reparam": ({"branches": [int(k) for k in config.reparam.split(",")],
                     "note": "trained as parallel depthwise kernels + BNs, merged into the spec's kernel (E-DNAS "
                             "Eq. 1-2); validation metrics are the parallel form's"} if config.reparam else None),
        "metrics": final,
        "strategy": config.strategy, "replicas": replicas,
        "resumed": backup.restored,
        "wall_time_s": round(time.time() - started, 3), "train_time_s": round(backup.elapsed(), 3),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "produced_by": config.produced_by,
    }
    write_json(card_file, card)
    shutil.rmtree(backup_dir, ignore_errors=True)
    return TrainResult(weights_file, card, history)
