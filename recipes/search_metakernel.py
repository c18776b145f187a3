"""Meta-kernel search (Chen et al. 2019) to a MACs budget, writing a derived zoo spec, plots and the search state.

    python -m recipes.search_metakernel --dataset=folder:../shared/data/cifar10_subset --target_macs=8e6 \\
        --epochs=10 --out_dir=runs/mk_8m
    python -m recipes.search_metakernel --flagfile=my_search.flags        # absl flagfile

Every depthwise filter of the supernet (``--space``: MixNet-like ``cifar`` at 32×32, or ``imagenet`` at 224) chooses a
kernel among ``--candidates`` or "None" (pruned). Weights train on the training split, α on a held-out part of it
(``--holdout``) with the cost-aware loss CE + λ·L_MACs (``--lam``, ``--eta``) around ``--target_macs``; the
Gumbel-softmax temperature anneals from ``--tau_start`` to ``--tau_end``. Rerunning the same command after a kill
resumes from the last epoch checkpoint in ``--out_dir``.

Writes under ``--out_dir``: ``derived.json`` (or ``--output``; a zoo spec whose provenance records the method,
target, seed, data and expected/exact MACs), ``derived_init.npz`` (the derived model's weights extracted from the
supernet, loadable with ``zoo.build(spec, weights=...)``), ``kernel_distribution.png`` (filters per kernel size per
layer, the paper's Fig. 6), ``alpha_trajectories.png``, ``history.json``, ``summary.json``, ``tensorboard/`` and
``checkpoints/``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import flags

from recipes._cli import UsageError, run

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder images, "
                                         "PATH/train and PATH/test when present) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
flags.DEFINE_enum("space", "cifar", ["cifar", "imagenet"], "Search space: MixNet-like 'cifar' (32×32 default) or "
                                                           "'imagenet' (224×224, MixNet-M macro architecture).")
flags.DEFINE_float("width", 1.0, "Width multiplier of the 'cifar' space.", lower_bound=0.05)
flags.DEFINE_integer("depth", 1, "Block repeats per stage of the 'cifar' space.", lower_bound=1)
flags.DEFINE_integer("input_size", None, "Input size (default: 32 for 'cifar', 224 for 'imagenet').", lower_bound=16)
flags.DEFINE_list("candidates", ["3", "5", "7"], "Candidate depthwise kernel sizes (distinct odd integers).")
flags.DEFINE_enum("dw_mode", "meta", ["meta", "multi"], "Supernet form: 'meta' (one conv, masked meta kernel) or "
                                                        "'multi' (DARTS-style baseline, one conv per candidate).")
flags.DEFINE_float("target_macs", None, "Target T of the cost loss: multiply-accumulates of one forward pass at the "
                                        "search input size (e.g. 8e6).")
flags.DEFINE_float("lam", 2.0, "λ: weight of the cost loss (paper: 2.0).", lower_bound=0.0)
flags.DEFINE_float("eta", 0.1, "η: slack of the cost loss around T (paper: 0.1).", lower_bound=1e-4)
flags.DEFINE_float("tau_start", 5.0, "Initial Gumbel-softmax temperature.", lower_bound=1e-3)
flags.DEFINE_float("tau_end", 0.5, "Final temperature (exponential annealing per step).", lower_bound=1e-3)
flags.DEFINE_integer("epochs", 10, "Search epochs.", lower_bound=1)
flags.DEFINE_integer("warmup_epochs", 0, "Epochs that train only the weights before α starts moving.", lower_bound=0)
flags.DEFINE_integer("batch_size", 64, "Batch size (weights and α batches).", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the weight split).",
                     lower_bound=1)
flags.DEFINE_float("holdout", 0.2, "Fraction of the training split held out for α.", lower_bound=0.01, upper_bound=0.9)
flags.DEFINE_integer("limit", None, "Use only the first N training examples (quick runs).", lower_bound=2)
flags.DEFINE_integer("val_limit", 1000, "Test examples used for the per-epoch argmax accuracy (0: skip).",
                     lower_bound=0)
flags.DEFINE_float("w_lr", 0.05, "Weight learning rate (SGD, Nesterov momentum 0.9).", lower_bound=0.0)
flags.DEFINE_float("a_lr", 3e-3, "α learning rate (Adam).", lower_bound=0.0)
flags.DEFINE_bool("project", True, "If the argmax architecture misses --target_macs by more than --tolerance, "
                                   "move single filters' choices (least α preference lost per MAC first) until it "
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

# Settings that must match to resume a search in an existing --out_dir.
_RESUME_KEYS = ("dataset", "space", "width", "depth", "input_size", "candidates", "dw_mode", "target_macs", "lam",
                "eta", "tau_start", "tau_end", "epochs", "warmup_epochs", "batch_size", "steps_per_epoch", "holdout",
                "limit", "w_lr", "a_lr", "seed")


def _settings() -> dict:
    return {k: getattr(FLAGS, k) for k in _RESUME_KEYS}


def _check_flags():
    """Everything checkable without TensorFlow; returns the candidate sizes."""
    from inputs.classification import known_classes, validate
    from search.metakernel_space import check_candidates
    if FLAGS.target_macs is None or FLAGS.target_macs <= 0:
        raise UsageError("--target_macs: required, a positive number of multiply-accumulates (e.g. 8e6)")
    try:
        cands = check_candidates(int(c) for c in FLAGS.candidates)
    except ValueError as e:
        raise UsageError(f"--candidates={','.join(FLAGS.candidates)}: {e}") from None
    if FLAGS.tau_end > FLAGS.tau_start:
        raise UsageError(f"--tau_end={FLAGS.tau_end} is above --tau_start={FLAGS.tau_start}")
    if FLAGS.warmup_epochs >= FLAGS.epochs:
        raise UsageError(f"--warmup_epochs={FLAGS.warmup_epochs} leaves no epoch for α (--epochs={FLAGS.epochs})")
    if FLAGS.name is not None:
        from models.spec import NAME_RE
        if not NAME_RE.match(FLAGS.name):
            raise UsageError(f"--name={FLAGS.name!r}: use lower-case letters, digits, '_', '.', '-'")
    validate(FLAGS.dataset, FLAGS.data_dir)
    saved = os.path.join(FLAGS.out_dir, "search_settings.json")
    if os.path.exists(saved):
        with open(saved) as f:
            old = json.load(f)
        diff = sorted(k for k in _RESUME_KEYS if old.get(k) != _settings()[k])
        if diff:
            raise UsageError(f"--out_dir={FLAGS.out_dir} holds a search with other settings ({', '.join(diff)}); "
                             "rerun with the same flags to resume, or use a new --out_dir")
    classes = known_classes(FLAGS.dataset)
    if classes is not None:  # tfds names: checked once the data is loaded
        _check_target(_space(cands, classes))
    return cands


def _space(cands, classes):
    from search.metakernel_space import cifar_space, imagenet_space
    if FLAGS.space == "cifar":
        return cifar_space(FLAGS.width, FLAGS.depth, cands, FLAGS.input_size or 32, classes)
    space = imagenet_space(cands).replace(classes=classes)
    return space.replace(input_size=FLAGS.input_size) if FLAGS.input_size else space


def _check_target(space) -> None:
    lo, hi = space.macs_range()
    if not lo < FLAGS.target_macs < hi:
        size = space.input_size
        raise UsageError(f"--target_macs={FLAGS.target_macs:.4g} is outside what the space can reach "
                         f"({lo:.4g} … {hi:.4g} MACs at {size}×{size})")


def _write_json(path, obj):
    from common.io import atomic_write
    text = json.dumps(obj, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cands = _check_flags()
    os.makedirs(FLAGS.out_dir, exist_ok=True)

    import keras
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from common.io import atomic_write
    from inputs.classification import load
    from models import spec as spec_lib
    from models.counting import count
    from reports import plots
    from search import supernet as sn
    from search.differentiable import MetaKernelSearch, SearchConfig
    from training.distribute import make_strategy

    strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas, FLAGS.tpu)
    keras.utils.set_random_seed(FLAGS.seed)
    common = dict(batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir, seed=FLAGS.seed, holdout=FLAGS.holdout,
                  limit=FLAGS.limit)
    size = FLAGS.input_size or (32 if FLAGS.space == "cifar" else 224)
    train_ds, info = load(FLAGS.dataset, "train", image_size=size, training=True, repeat=True, **common)
    arch_ds, arch_info = load(FLAGS.dataset, "holdout", image_size=size, training=True, repeat=True, **common)
    val_ds = None
    if FLAGS.val_limit:
        val_ds, _ = load(FLAGS.dataset, "test", image_size=size, batch_size=FLAGS.batch_size, training=False,
                         data_dir=FLAGS.data_dir, limit=FLAGS.val_limit)
    space = _space(cands, info.num_classes)
    _check_target(space)
    steps = FLAGS.steps_per_epoch or max(1, info.num_examples // FLAGS.batch_size)

    if FLAGS.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(f"--batch_size={FLAGS.batch_size} does not split over {strategy.num_replicas_in_sync} "
                         "replicas")
    with strategy.scope():
        model = sn.build_supernet(space, FLAGS.dw_mode, tau=FLAGS.tau_start, seed=FLAGS.seed)
    config = SearchConfig(target=FLAGS.target_macs, epochs=FLAGS.epochs, lam=FLAGS.lam, eta=FLAGS.eta,
                          tau_start=FLAGS.tau_start, tau_end=FLAGS.tau_end, w_lr=FLAGS.w_lr, a_lr=FLAGS.a_lr,
                          warmup_epochs=FLAGS.warmup_epochs, seed=FLAGS.seed)
    initial_expected = float(sn.expected_cost(model, space)[0])  # uniform α, before any restore
    search = MetaKernelSearch(model, space, config, checkpoint_dir=os.path.join(FLAGS.out_dir, "checkpoints"),
                              strategy=strategy)
    _write_json(os.path.join(FLAGS.out_dir, "search_settings.json"), _settings())
    resumed = search.restore()
    if resumed:
        print(f"resuming from epoch {int(search.epoch.numpy())} in {FLAGS.out_dir}", file=sys.stderr)
    writer = tf.summary.create_file_writer(os.path.join(FLAGS.out_dir, "tensorboard"))
    bar = (lambda total: tqdm(total=total, desc="search", unit="step", file=sys.stderr)) if FLAGS.progress else None
    history = search.run(train_ds, arch_ds, steps, val_ds=val_ds, writer=writer, progress=bar)

    _write_json(os.path.join(FLAGS.out_dir, "history.json"), history)
    expected = float(sn.expected_cost(model, space)[0])
    argmax_macs = count(sn.derive(model, space, "probe")).macs
    choice, moves = sn.choices(model), 0
    if FLAGS.project:
        choice, moves, _ = sn.project_to_target(model, space, FLAGS.target_macs, FLAGS.tolerance)
    name = FLAGS.name or f"mk_{FLAGS.space}_{FLAGS.target_macs / 1e6:g}m".replace(".", "p")
    notes = (f"meta-kernel search ({FLAGS.dw_mode}), candidates {list(cands)}, lambda={FLAGS.lam}, eta={FLAGS.eta}, "
             f"tau {FLAGS.tau_start}->{FLAGS.tau_end}, {FLAGS.epochs} epochs x {steps} steps, batch "
             f"{FLAGS.batch_size}, holdout {FLAGS.holdout}; projection moves={moves}")
    last = history[-1] if history else {}
    metrics = {"expected_macs": expected, "argmax_macs": float(argmax_macs), "projection_moves": float(moves),
               "supernet_val_acc_argmax": last.get("val_acc_argmax", float("nan"))}
    prov = spec_lib.Provenance(method="metakernel", source=f"search space {space.name}", target=FLAGS.target_macs,
                               target_macs=int(round(FLAGS.target_macs)), seed=FLAGS.seed, data=FLAGS.dataset,
                               notes=notes, metrics=())
    derived = sn.derive(model, space, name, prov, choice=choice)
    exact = count(derived)
    metrics["macs"] = float(exact.macs)
    metrics["params"] = float(exact.params)
    metrics = {k: v for k, v in metrics.items() if v == v}  # drop NaN (no validation split)
    derived = dataclasses.replace(derived, provenance=dataclasses.replace(
        prov, metrics=tuple(sorted(metrics.items()))))
    output = FLAGS.output or os.path.join(FLAGS.out_dir, "derived.json")
    text = spec_lib.dumps(derived)
    atomic_write(output, lambda f: f.write(text.encode()))
    weights = sn.extract_weights(model, space, derived, choice)
    atomic_write(os.path.join(FLAGS.out_dir, "derived_init.npz"), lambda f: np.savez(f, **weights))

    searchable = [b for b in sn.search_blocks(model) if b.searchable]
    labels = (["pruned"] if any(b.dw.allow_none for b in searchable) else []) + [f"{k}×{k}" for k in cands]
    layer_names, counts = [], []
    for block, c in zip(sn.search_blocks(model), choice):
        if not block.searchable:
            continue
        row = np.zeros(len(labels))
        off = len(labels) - len(cands)
        if block.dw.per_filter:
            shift = 0 if block.dw.allow_none else off
            np.add.at(row, c + shift, 1)
        else:
            row[off + int(c[0])] = block.mid_channels
        layer_names.append(block.name)
        counts.append(row)
    plots.kernel_distribution(layer_names, np.array(counts), labels,
                              os.path.join(FLAGS.out_dir, "kernel_distribution.png"),
                              f"{name}: {exact.macs / 1e6:.2f}M MACs (target {FLAGS.target_macs / 1e6:.2f}M)")
    if history:
        plots.alpha_trajectories(history, layer_names, labels, os.path.join(FLAGS.out_dir, "alpha_trajectories.png"),
                                 FLAGS.target_macs)
    summary = {"spec": output, "name": name, "target_macs": FLAGS.target_macs, "macs": exact.macs,
               "params": exact.params, "macs_vs_target": exact.macs / FLAGS.target_macs - 1,
               "initial_expected_macs": initial_expected, "expected_macs": expected, "argmax_macs": argmax_macs, "projection_moves": float(moves),
               "epochs": FLAGS.epochs, "steps_per_epoch": steps, "train_examples": info.num_examples,
               "holdout_examples": arch_info.num_examples, "resumed": resumed, "history": history[-1:] or None}
    _write_json(os.path.join(FLAGS.out_dir, "summary.json"), summary)
    print(f"{name}: {exact.macs:,} MACs ({summary['macs_vs_target']:+.2%} vs target {FLAGS.target_macs:,.0f}; "
          f"expected {expected:,.0f}, argmax {argmax_macs:,}), {exact.params:,} params -> {output}")


if __name__ == "__main__":
    run(main)
