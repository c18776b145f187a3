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
images after recalibrating BatchNorm on ``--recal_images`` training images. Constraints: any of ``--max_macs``,
``--max_params``, ``--max_bitops``, ``--max_latency_ms`` (with ``--latency_table``, a table from
``recipes.benchmark_latency --build_table`` / ``search.latency``; ``benchmarks/results/latency_lut_spos.json`` has
every block of the ``--space=imagenet`` space with the paper's channel ratios, timed on this host by
``python -m benchmarks.latency_model --space=spos_imagenet``; parts missing from a table, e.g. a head with another
class count, fall back to its MACs-affine fit). ``both`` runs the two in order. Rerunning the same
command after a kill resumes (supernet: last epoch checkpoint; evolution: last evaluated candidate).

Writes under ``--out_dir``: ``supernet/`` (checkpoints, ``history.json``), ``tensorboard/``, ``evolution_state.json``
and ``random_state.json`` (resumable search states), ``derived.json`` (the best candidate as a zoo spec, provenance
``spos``), ``derived_init.npz`` (its weights sliced from the supernet, for ``recipes.train --weights``),
``evolution.png`` (best and top-k accuracy per iteration, evolution vs random: the paper's Fig. 3),
``population.png`` (every evaluated candidate on the accuracy-vs-MACs plane with the constraint line) and
``summary.json``.
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags

from models.spec import SHUFFLE_CHOICES  # = search.spos.CHOICES, without importing TensorFlow
from recipes._cli import UsageError, run

FLAGS = flags.FLAGS
flags.DEFINE_enum("phase", "both", ["supernet", "evolution", "both"], "What to run.")
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder "
                                         "images) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
flags.DEFINE_enum("space", "cifar", ["cifar", "imagenet"], "'cifar': paper Table 2 layout at 32×32 with channels × "
                                                           "--width and --depth blocks; 'imagenet': Table 2 at 224.")
flags.DEFINE_float("width", 0.25, "Channel multiplier of the 'cifar' space (1.0 = 64/160/320/640).", lower_bound=0.05)
flags.DEFINE_list("depth", ["4", "4", "8", "4"], "Choice blocks per stage of the 'cifar' space.")
flags.DEFINE_list("choices", list(SHUFFLE_CHOICES), "Block choices searched per block: ShuffleNetV2 units with a "
                  "3/5/7 depthwise kernel, or 'x' (Xception-like, three 3×3 depthwise separable convs); the paper's "
                  "four by default.")
flags.DEFINE_list("channel_ratios", ["1.0"], "Mid-channel multipliers searched per block (paper: 0.2,0.4,…,1.6; "
                                             "'1.0' alone = no channel search).")
flags.DEFINE_list("bits", [], "Bit-width choices w:a per block, e.g. 1:2,2:2,1:4,2:4,3:4,4:4 (the paper's set); "
                              "empty = full precision.")
flags.DEFINE_enum("sampling", "constraint", ["constraint", "uniform"],
                  "Supernet path sampling: uniform among paths within the constraints (paper default) or uniform.")
flags.DEFINE_float("max_macs", None, "Hard limit on MACs (multiply-accumulates, batch 1).")
flags.DEFINE_float("max_params", None, "Hard limit on parameters.")
flags.DEFINE_float("max_bitops", None, "Hard limit on BitOps (Σ MACs·w·a over quantized blocks).")
flags.DEFINE_float("max_latency_ms", None, "Hard limit on predicted latency (needs --latency_table).")
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
flags.DEFINE_bool("random_search", True, "Also run random search on the same budget (the baseline).")
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

_SUPERNET_KEYS = ("dataset", "space", "width", "depth", "choices", "channel_ratios", "bits", "sampling", "max_macs",
                  "max_params", "max_bitops", "max_latency_ms", "epochs", "batch_size", "steps_per_epoch", "lr",
                  "weight_decay", "holdout", "limit", "seed")

_SAMPLING_KEYS = ("sampling", "max_macs", "max_params", "max_bitops", "max_latency_ms")


def _parse_space_flags():
    try:
        depth = tuple(int(d) for d in FLAGS.depth)
        ratios = tuple(float(r) for r in FLAGS.channel_ratios)
        bits = tuple(tuple(int(v) for v in b.split(":")) for b in FLAGS.bits)
    except ValueError:
        raise UsageError("--depth, --channel_ratios and --bits take integers, numbers and w:a pairs") from None
    if not depth or min(depth) < 1:
        raise UsageError(f"--depth={','.join(FLAGS.depth)}: every stage needs at least one block")
    if any(len(b) != 2 or not (1 <= b[0] <= 8 and 1 <= b[1] <= 8) for b in bits):
        raise UsageError(f"--bits={','.join(FLAGS.bits)}: each entry is w:a with 1 ≤ w, a ≤ 8")
    if not ratios or min(ratios) <= 0 or len(set(ratios)) != len(ratios):
        raise UsageError(f"--channel_ratios={','.join(FLAGS.channel_ratios)}: distinct positive numbers")
    choices = FLAGS.choices
    if not choices or any(c not in SHUFFLE_CHOICES for c in choices) or len(set(choices)) != len(choices):
        raise UsageError(f"--choices={','.join(choices)}: distinct values of {','.join(SHUFFLE_CHOICES)}")
    return depth, ratios, bits, tuple(choices)


def _check_flags():
    from inputs.classification import known_classes, validate
    for flag in ("max_macs", "max_params", "max_bitops", "max_latency_ms"):
        v = getattr(FLAGS, flag)
        if v is not None and v <= 0:
            raise UsageError(f"--{flag}={v}: must be positive")
    if FLAGS.max_latency_ms is not None and not FLAGS.latency_table:
        raise UsageError("--max_latency_ms needs --latency_table")
    if FLAGS.latency_table and not os.path.isfile(FLAGS.latency_table):
        raise UsageError(f"--latency_table={FLAGS.latency_table}: no such file")
    if FLAGS.max_bitops is not None and not FLAGS.bits:
        raise UsageError("--max_bitops needs --bits (a full-precision space has no BitOps)")
    if FLAGS.top_k > FLAGS.population:
        raise UsageError(f"--top_k={FLAGS.top_k} exceeds --population={FLAGS.population}")
    if FLAGS.name is not None:
        from models.spec import NAME_RE
        if not NAME_RE.match(FLAGS.name):
            raise UsageError(f"--name={FLAGS.name!r}: use lower-case letters, digits, '_', '.', '-'")
    if FLAGS.execution == "eager" and FLAGS.strategy != "default":
        raise UsageError(f"--strategy={FLAGS.strategy} needs --execution=graph")
    parsed = _parse_space_flags()
    validate(FLAGS.dataset, FLAGS.data_dir)
    classes = known_classes(FLAGS.dataset)
    if classes is not None:  # tfds names: checked once the data is loaded
        _feasible(_space(*parsed, classes), _latency_table())
    saved = os.path.join(FLAGS.out_dir, "supernet_settings.json")
    if os.path.exists(saved):
        with open(saved) as f:
            old = json.load(f)
        # the evolution phase may search under other constraints than the supernet was trained with
        keys = [k for k in _SUPERNET_KEYS if FLAGS.phase != "evolution" or k not in _SAMPLING_KEYS]
        old.setdefault("choices", list(SHUFFLE_CHOICES))  # settings written before --choices existed
        diff = sorted(k for k in keys if old.get(k) != getattr(FLAGS, k))
        if diff:
            raise UsageError(f"--out_dir={FLAGS.out_dir} holds a supernet trained with other settings "
                             f"({', '.join(diff)}); rerun with the same flags, or use a new --out_dir")
    elif FLAGS.phase == "evolution":
        raise UsageError(f"--phase=evolution: no trained supernet in --out_dir={FLAGS.out_dir} (run --phase=supernet)")
    return parsed


def _space(depth, ratios, bits, choices, classes):
    import dataclasses

    from search import spos as sp
    if FLAGS.space == "cifar":
        return sp.cifar_space(FLAGS.width, depth, classes, ratios, bits, choices=choices)
    space = sp.imagenet_space(ratios, bits, choices)
    return space if classes == space.classes else dataclasses.replace(space, classes=classes)


def _latency_table():
    if not FLAGS.latency_table:
        return None
    from search.latency import LatencyTable
    return LatencyTable.load(FLAGS.latency_table)


def _feasible(space, latency):
    """The constraints, after checking that uniform sampling (as constraint sampling and evolution draw) can meet
    them."""
    import numpy as np

    from search import spos as sp
    constraints = sp.Constraints(FLAGS.max_macs, FLAGS.max_params, FLAGS.max_bitops, FLAGS.max_latency_ms)
    try:
        sp.sample(space, np.random.default_rng(FLAGS.seed), constraints, latency, max_tries=20_000)
    except sp.ConstraintError as e:
        raise UsageError(str(e)) from None
    return constraints


def _write_json(path, obj):
    from common.io import atomic_write
    text = json.dumps(obj, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _arrays(ds, n):
    import numpy as np
    xs, ys, have = [], [], 0
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
        have += len(xs[-1])
        if have >= n:
            break
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    depth, ratios, bits, choices = _check_flags()
    os.makedirs(FLAGS.out_dir, exist_ok=True)

    import keras
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm
    tf.get_logger().setLevel("ERROR")  # per-branch functions compile lazily; TF warns about each new trace

    from common.io import atomic_write
    from inputs.classification import load
    from models import spec as spec_lib
    from reports import plots
    from search import evolution as ev
    from search import spos as sp
    from search.spos_net import SposSupernet, build_supernet
    from search.spos_train import CandidateEvaluator, SposConfig, SposTrainer
    from training.distribute import make_strategy

    strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas, FLAGS.tpu)  # before any other TensorFlow work
    latency = _latency_table()
    common = dict(data_dir=FLAGS.data_dir, seed=FLAGS.seed, holdout=FLAGS.holdout, limit=FLAGS.limit)
    size = 32 if FLAGS.space == "cifar" else 224
    train_ds, info = load(FLAGS.dataset, "train", image_size=size, batch_size=FLAGS.batch_size, training=True,
                          repeat=True, **common)
    space = _space(depth, ratios, bits, choices, info.num_classes)
    constraints = _feasible(space, latency)
    keras.utils.set_random_seed(FLAGS.seed)
    with strategy.scope():
        model = build_supernet(space, seed=FLAGS.seed)
    config = SposConfig(epochs=FLAGS.epochs, lr=FLAGS.lr, weight_decay=FLAGS.weight_decay, sampling=FLAGS.sampling,
                        execution=FLAGS.execution, seed=FLAGS.seed)
    trainer = SposTrainer(model, config, constraints, latency, os.path.join(FLAGS.out_dir, "supernet"), strategy)
    writer = tf.summary.create_file_writer(os.path.join(FLAGS.out_dir, "tensorboard"))
    bar = ((lambda what: lambda total: tqdm(total=total, desc=what, file=sys.stderr)) if FLAGS.progress
           else (lambda what: None))
    summary = {"space": space.to_json(), "constraints": constraints.limits(), "train_examples": info.num_examples}
    if FLAGS.phase in ("supernet", "both"):
        _write_json(os.path.join(FLAGS.out_dir, "supernet_settings.json"),
                    {k: getattr(FLAGS, k) for k in _SUPERNET_KEYS})
        if trainer.restore():
            print(f"resuming supernet training from epoch {int(trainer.epoch.numpy())}", file=sys.stderr)
        steps = FLAGS.steps_per_epoch or max(1, info.num_examples // FLAGS.batch_size)
        history = trainer.run(train_ds, steps, writer=writer, progress=bar("supernet"))
        summary["supernet"] = {"epochs": FLAGS.epochs, "steps_per_epoch": steps, "last": history[-1],
                               "execution": FLAGS.execution, "strategy": FLAGS.strategy,
                               "replicas": strategy.num_replicas_in_sync}
    else:
        if not trainer.restore() or int(trainer.epoch.numpy()) < FLAGS.epochs:
            raise UsageError(f"--phase=evolution: the supernet in {FLAGS.out_dir} has not finished training "
                             "(rerun --phase=supernet with the same flags)")
    if FLAGS.phase == "supernet":
        _write_json(os.path.join(FLAGS.out_dir, "summary.json"), summary)
        return

    # --- evolution ---------------------------------------------------------------------------------------------
    recal_ds, _ = load(FLAGS.dataset, "train", image_size=size, batch_size=FLAGS.eval_batch, training=False,
                       **common)
    val_ds, val_info = load(FLAGS.dataset, "holdout", image_size=size, batch_size=FLAGS.eval_batch, training=False,
                            **common)
    recal_x, _ = _arrays(recal_ds.shuffle(64, seed=FLAGS.seed), FLAGS.recal_images)
    val_x, val_y = _arrays(val_ds, FLAGS.val_images)
    evaluator = CandidateEvaluator(model, recal_x, val_x, val_y, FLAGS.eval_batch)
    ecfg = ev.EvolutionConfig(population=FLAGS.population, iterations=FLAGS.iterations, top_k=FLAGS.top_k,
                              mutation_prob=FLAGS.mutation_prob, mutations=FLAGS.population // 2,
                              crossovers=FLAGS.population // 2, seed=FLAGS.seed)
    results = {}
    for kind in ("evolution", "random") if FLAGS.random_search else ("evolution",):
        try:
            search = ev.EvolutionSearch(space, evaluator, constraints, ecfg,
                                        os.path.join(FLAGS.out_dir, f"{kind}_state.json"), kind, latency)
        except ev.SearchStateError as e:
            raise UsageError(str(e)) from None

        def log(s, record, kind=kind):
            with writer.as_default(step=record["iteration"]):
                tf.summary.scalar(f"{kind}/best_acc", record["best_acc"])
                tf.summary.scalar(f"{kind}/topk_mean_acc", record["topk_mean_acc"])
        results[kind] = search.run(progress=bar(kind), on_iteration=log)
    best = results["evolution"]
    arch = sp.from_key(best["best"])
    name = FLAGS.name or f"spos_{FLAGS.space}_s{FLAGS.seed}"
    cost = sp.cost(space, arch, latency)
    metrics = {"supernet_val_acc": best["best_acc"], **{k: float(v) for k, v in cost.items()}}
    notes = (f"SPOS: supernet {FLAGS.epochs} epochs ({FLAGS.sampling} sampling), evolution P={FLAGS.population} "
             f"T={FLAGS.iterations} top-k={FLAGS.top_k}, BN recalibrated on {len(recal_x)} images, evaluated on "
             f"{len(val_x)} held-out images; constraints {constraints.limits()}; arch {best['best']}")
    prov = spec_lib.Provenance(method="spos", source="search space " + ("cifar" if FLAGS.space == "cifar" else
                                                                         "imagenet") + " (SPOS Table 2)",
                               target=FLAGS.max_macs, target_macs=int(FLAGS.max_macs) if FLAGS.max_macs else None,
                               seed=FLAGS.seed, data=FLAGS.dataset, notes=notes,
                               metrics=tuple(sorted(metrics.items())))
    derived = sp.arch_spec(space, arch, name, prov)
    text = spec_lib.dumps(derived)
    atomic_write(os.path.join(FLAGS.out_dir, "derived.json"), lambda f: f.write(text.encode()))
    weights = SposSupernet.extract(model, arch)
    atomic_write(os.path.join(FLAGS.out_dir, "derived_init.npz"), lambda f: np.savez(f, **weights))
    plots.evolution_curve(results, os.path.join(FLAGS.out_dir, "evolution.png"))
    plots.population(space, results, FLAGS.max_macs, os.path.join(FLAGS.out_dir, "population.png"))
    summary.update({"best": best["best"], "best_acc": best["best_acc"], "best_cost": cost, "spec": name,
                    "recal_images": len(recal_x), "val_images": len(val_x), "holdout_examples": val_info.num_examples,
                    "evolution": {k: {"best_acc": r["best_acc"], "evaluated": r["evaluated"],
                                      "history": r["history"]} for k, r in results.items()}})
    _write_json(os.path.join(FLAGS.out_dir, "summary.json"), summary)
    line = ", ".join(f"{k} best {r['best_acc']:.4f} ({r['evaluated']} evaluated)" for k, r in results.items())
    print(f"{name}: {cost['macs']:,} MACs, {cost['params']:,} params; {line} -> {FLAGS.out_dir}/derived.json")


if __name__ == "__main__":
    run(main)
