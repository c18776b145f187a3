"""Single Path One-Shot NAS (Guo et al. 2019; ``python -m recipes.search_spos``): the config, its TensorFlow-free
validation, and the run — supernet training by uniform (constraint) single-path sampling, then evolutionary search
under hard constraints, with random search as the baseline.

Phases: ``supernet`` trains the weight-sharing supernet (:class:`search.spos_train.SposTrainer`, checkpoints under
``out_dir/supernet/``); ``evolution`` runs Algorithm 1 (:class:`search.evolution.EvolutionSearch`) and, with
``random_search``, the random baseline on the same budget, every candidate evaluated after BatchNorm recalibration
(:class:`search.spos_train.CandidateEvaluator`); ``both`` runs the two in order. The run directory's identity is
``supernet_settings.json`` (`common.rundir.RunDir`); the evolution phase may search under other constraints than the
supernet was sampled with (:data:`SAMPLING_KEYS` are not compared then). Outputs: ``derived.json`` (the best
candidate's zoo spec from the supernet's ``derive``), ``derived_init.npz`` (its weights from ``extract``),
``evolution.png``, ``population.png``, ``evolution_state.json``/``random_state.json`` (resumable), ``tensorboard/``
and ``summary.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os

from common.checks import (
    DECAY_MAX,
    LR_MAX,
    WIDTH_MAX,
    ConfigError,
    check_at_least,
    check_at_most,
    check_one_of,
    check_out_dir,
)
from common.rundir import RunDir
from models.spec import SHUFFLE_CHOICES  # = search.spos.CHOICES, without importing TensorFlow
from training.distribute import STRATEGIES

SETTINGS_FILE = "supernet_settings.json"
# What a run writes in --out_dir besides SETTINGS_FILE: checked before any work (common.checks.check_run_outputs).
OUT_FILES = ("summary.json", "derived.json", "derived_init.npz", "evolution.png", "population.png",
             "evolution_state.json", "random_state.json", "supernet/checkpoint", "supernet/history.json")
OUT_DIRS = ("supernet", "tensorboard")
SUPERNET_KEYS = ("dataset", "space", "width", "depth", "choices", "channel_ratios", "bits", "sampling", "max_macs",
                 "max_params", "max_bitops", "max_latency_ms", "epochs", "batch_size", "steps_per_epoch", "lr",
                 "weight_decay", "holdout", "limit", "seed", "fix_path")
FIX_FLAGS = ("fix_block", "fix_channel_ratio", "fix_path")
SAMPLING_KEYS = ("sampling", "max_macs", "max_params", "max_bitops", "max_latency_ms")
PHASES = ("supernet", "evolution", "both")


@dataclasses.dataclass(frozen=True)
class SearchSposConfig:
    """One SPOS run; the fields are the flags of ``recipes.search_spos`` (see its ``--help``)."""

    phase: str = "both"
    dataset: str = "shapes"
    data_dir: str | None = None
    on_bad_image: str = "raise"  # folder: images that cannot be decoded: raise (naming the file) or skip
    space: str = "cifar"
    width: float = 0.25
    depth: tuple[int, ...] = (4, 4, 8, 4)
    choices: tuple[str, ...] = SHUFFLE_CHOICES
    channel_ratios: tuple[float, ...] = (1.0,)
    bits: tuple[tuple[int, int], ...] = ()
    sampling: str = "constraint"
    max_macs: float | None = None
    max_params: float | None = None
    max_bitops: float | None = None
    max_latency_ms: float | None = None
    latency_table: str | None = None
    epochs: int = 20
    batch_size: int = 64
    steps_per_epoch: int | None = None
    lr: float = 0.1
    weight_decay: float = 4e-5
    execution: str = "graph"
    holdout: float = 0.2
    limit: int | None = None
    population: int = 50
    iterations: int = 20
    top_k: int = 10
    mutation_prob: float = 0.1
    random_search: bool = True
    fix_block: str | None = None  # evolution over the rest: every block this choice (the paper's channel search)
    fix_channel_ratio: float | None = None  # every block this ratio (the paper's block search)
    # a path key (search.spos.key): every block's choice and channel ratio held, supernet and search over the bits
    # only (the paper's mixed-precision search on a fixed network)
    fix_path: str | None = None
    recal_images: int = 1024
    val_images: int = 1000
    eval_batch: int = 256
    seed: int = 0
    name: str | None = None
    out_dir: str = "runs/search_spos"
    strategy: str = "default"
    cpu_replicas: int = 1
    tpu: str = ""
    progress: bool = True


def settings(config: SearchSposConfig) -> dict:
    """The supernet's identity (``supernet_settings.json``). List values are the strings the flag lists gave before
    configs existed, so older run directories still resume."""
    out = {k: getattr(config, k) for k in SUPERNET_KEYS}
    out.update(depth=[str(d) for d in config.depth], choices=list(config.choices),
               channel_ratios=[str(float(r)) for r in config.channel_ratios],
               bits=[f"{w}:{a}" for w, a in config.bits])
    return out


class _SupernetDir(RunDir):
    """Reads the channel ratios of a settings file as numbers (``1`` and ``1.0`` name the same ratio)."""

    def saved_settings(self):
        saved = super().saved_settings()
        ratios = saved.get("channel_ratios") if saved else None
        if isinstance(ratios, list):
            with contextlib.suppress(TypeError, ValueError):
                saved["channel_ratios"] = [str(float(r)) for r in ratios]
        return saved


def _check_space(config: SearchSposConfig) -> None:
    depth, ratios, bits, choices = config.depth, config.channel_ratios, config.bits, config.choices
    if not depth or min(depth) < 1:
        raise ConfigError(f"--depth={','.join(str(d) for d in depth)}: every stage needs at least one block")
    if len(depth) != 4:
        raise ConfigError(f"--depth={','.join(str(d) for d in depth)}: four stages (the ShuffleNetV2 layout of the "
                          "paper's Table 2), e.g. 4,4,8,4")
    from models.spec import ACTIVATION_BITS, WEIGHT_BITS
    if any(len(b) != 2 or b[0] not in WEIGHT_BITS or b[1] not in ACTIVATION_BITS for b in bits) \
            or len(set(bits)) != len(bits):
        raise ConfigError(f"--bits={','.join(':'.join(str(v) for v in b) for b in bits)}: distinct w:a entries with "
                          "w 1–8 or 32 (float) and a 1–8, 16 or 32 (float)")
    if not ratios or min(ratios) <= 0 or len(set(ratios)) != len(ratios):
        raise ConfigError(f"--channel_ratios={','.join(str(r) for r in ratios)}: distinct positive numbers")
    if not choices or any(c not in SHUFFLE_CHOICES for c in choices) or len(set(choices)) != len(choices):
        raise ConfigError(f"--choices={','.join(choices)}: distinct values of {','.join(SHUFFLE_CHOICES)}")


def make_space(config: SearchSposConfig, classes: int):
    """The search space of ``config`` (TensorFlow-free)."""
    from search import spos as sp
    if config.space == "cifar":
        return sp.cifar_space(config.width, config.depth, classes, config.channel_ratios, config.bits,
                              choices=config.choices)
    space = sp.imagenet_space(config.channel_ratios, config.bits, config.choices)
    return space if classes == space.classes else dataclasses.replace(space, classes=classes)


def load_latency(config: SearchSposConfig):
    """The whole-model predictor of ``--latency_table`` (its calibration applied: `LatencyTable.calibrated`), or
    None."""
    if not config.latency_table:
        return None
    from search.latency import LatencyTable
    return LatencyTable.load(config.latency_table).calibrated()


def constraints_of(config: SearchSposConfig):
    """The hard limits of the search (``search.spos.Constraints``)."""
    from search import spos as sp
    return sp.Constraints(config.max_macs, config.max_params, config.max_bitops, config.max_latency_ms)


def feasible_constraints(config: SearchSposConfig, space, latency):
    """The constraints, after checking that uniform sampling (as constraint sampling and evolution draw) can meet
    them (`search.spos.ConstraintError`, an input error, when it cannot)."""
    import numpy as np

    from search import spos as sp
    constraints = constraints_of(config)
    if latency is not None:
        table_coverage(config, space, latency)
    sp.sample(space, np.random.default_rng(config.seed), constraints, latency, max_tries=20_000)
    return constraints


def table_coverage(config: SearchSposConfig, space, latency) -> tuple[int, int]:
    """``(missing, total)`` distinct parts of the space's paths (one path per choice and channel ratio, every block
    at it: :func:`search.spos.cover`) that ``--latency_table`` lacks; those fall back to the table's fit on MACs.

    Raises:
        ConfigError: the table holds none of them (a table of another space or input size, whose every
            prediction would be the fallback).
    """
    from search import spos as sp
    from search.latency import parts
    specs = [sp.arch_spec(space, a) for a in sp.cover(space)]
    keys = {p.key for spec in specs for p in parts(spec)}
    missing = len(latency.missing(specs))
    if missing == len(keys):
        raise ConfigError(f"--latency_table={config.latency_table}: holds none of the {len(keys)} parts of this "
                          f"space's paths (a table of another space or input size?): time this one with python -m "
                          f"benchmarks.latency_model")
    return missing, len(keys)


EVALUATION_KEYS = ("dataset", "recal_images", "val_images", "eval_batch", "seed")


def evaluation_identity(config: SearchSposConfig) -> dict:
    """How evolution measures a candidate: part of the identity of its resumable state (`search.evolution`); with
    ``--latency_table``, also the table's whole-model calibration (a candidate's cached latency depends on it)."""
    out = {k: getattr(config, k) for k in EVALUATION_KEYS}
    if config.latency_table and os.path.isfile(config.latency_table):
        from search.latency import LatencyError, LatencyTable
        try:
            out["latency_calibration"] = LatencyTable.load(config.latency_table).calibration
        except LatencyError:
            pass  # validate names the broken table
    return out


def check_evolution_state(config: SearchSposConfig) -> None:
    """Before TensorFlow: a saved evolution/random-search state in ``--out_dir`` must have been measured the same
    way as this run would measure (its cached accuracies are reused), else one line naming the flags that differ."""
    for kind in ("evolution", "random"):
        path = os.path.join(config.out_dir, f"{kind}_state.json")
        if config.phase == "supernet" or not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                identity = json.load(f)["identity"]
            saved = identity.get("evaluation")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{path}: unreadable search state ({type(e).__name__}); remove it to start the "
                              "search over, or use another --out_dir") from None
        if not isinstance(saved, dict):
            raise ConfigError(f"{path}: a search state from before the measurement settings were recorded (its "
                              "cached accuracies cannot be checked against --recal_images/--val_images/--eval_batch); "
                              "remove it to search again, or use another --out_dir")
        now = evaluation_identity(config)
        diff = [k for k in EVALUATION_KEYS if saved.get(k) != now[k]]
        if saved.get("latency_calibration") != now.get("latency_calibration"):
            diff.append("latency_table (its calibration)")
        if diff:
            raise ConfigError(f"--out_dir={config.out_dir}: its {kind} state was measured with other "
                              f"{', '.join('--' + k for k in diff)}; rerun with the same flags to resume, or remove "
                              f"{path} to search again")
        # the search's own settings and limits (found otherwise only after TensorFlow and the supernet load)
        ours = {**dataclasses.asdict(evolution_config(config)), **dataclasses.asdict(constraints_of(config))}
        theirs = {**(identity.get("config") if isinstance(identity.get("config"), dict) else {}),
                  **(identity.get("constraints") if isinstance(identity.get("constraints"), dict) else {})}
        diff = sorted({EVOLUTION_FLAGS.get(k, k) for k in ours if theirs.get(k) != ours[k]})
        fixed = {str(f): v for f, v in sorted(fixed_fields(config).items())}
        if (identity.get("fixed") or {}) != fixed:
            diff += ["fix_block/--fix_channel_ratio/--fix_path"]
        if diff:
            raise ConfigError(f"--out_dir={config.out_dir}: its {kind} state is a search with other "
                              f"{', '.join('--' + k for k in diff)}; rerun with the same flags to resume, or remove "
                              f"{path} to search again")


# EvolutionConfig fields derived from a flag of another name
EVOLUTION_FLAGS = {"mutations": "population", "crossovers": "population"}


def fixed_fields(config: SearchSposConfig) -> dict:
    """``--fix_block`` / ``--fix_channel_ratio`` / ``--fix_path`` as `search.evolution.EvolutionSearch`'s
    ``fixed`` (field → option index, or → one option index per block)."""
    if config.fix_path is not None:
        from search import spos as sp
        arch = sp.from_key(config.fix_path)
        return {0: arch[:, 0].tolist(), 1: arch[:, 1].tolist()}
    out = {}
    if config.fix_block is not None:
        out[0] = list(config.choices).index(config.fix_block)
    if config.fix_channel_ratio is not None:
        out[1] = [float(r) for r in config.channel_ratios].index(float(config.fix_channel_ratio))
    return out


def evolution_config(config: SearchSposConfig):
    """Algorithm 1's settings (``search.evolution.EvolutionConfig``) from the flags."""
    from search import evolution as ev
    return ev.EvolutionConfig(population=config.population, iterations=config.iterations, top_k=config.top_k,
                              mutation_prob=config.mutation_prob, mutations=config.population // 2,
                              crossovers=config.population // 2, seed=config.seed)


def divergence_hint(config) -> str:
    """What to change when the search's loss or weights become NaN or infinite (`common.errors.Diverged`)."""
    return (f"lower --lr (it is {config.lr:g}) or --weight_decay ({config.weight_decay:g})"
            "; no derived spec or weights were written: rerun with a new --out_dir")


def validate(config: SearchSposConfig) -> RunDir:
    """Everything checkable without TensorFlow: values, the space, the dataset, the feasibility of the constraints
    (when the class count is known without loading the data) and the run directory; returns the run directory.

    Raises:
        InputError (subclasses): a bad value, named by its flag; `common.rundir.SettingsMismatch` when ``out_dir``
        holds a supernet trained with other settings.
    """
    from inputs.classification import known_classes
    from inputs.classification import validate as validate_dataset

    check_one_of(phase=(config.phase, PHASES), space=(config.space, ("cifar", "imagenet")),
                 sampling=(config.sampling, ("constraint", "uniform")),
                 execution=(config.execution, ("eager", "graph")), strategy=(config.strategy, STRATEGIES))
    check_at_least(epochs=(config.epochs, 1), batch_size=(config.batch_size, 1),
                   steps_per_epoch=(config.steps_per_epoch, 1), limit=(config.limit, 2),
                   population=(config.population, 2), iterations=(config.iterations, 1), top_k=(config.top_k, 1),
                   recal_images=(config.recal_images, 1), val_images=(config.val_images, 1),
                   eval_batch=(config.eval_batch, 1), cpu_replicas=(config.cpu_replicas, 1),
                   width=(config.width, 0.05), lr=(config.lr, 0.0), weight_decay=(config.weight_decay, 0.0))
    check_at_most(width=(config.width, WIDTH_MAX), lr=(config.lr, LR_MAX),
                  weight_decay=(config.weight_decay, DECAY_MAX))
    for flag in ("max_macs", "max_params", "max_bitops", "max_latency_ms"):
        v = getattr(config, flag)
        if v is not None and v <= 0:
            raise ConfigError(f"--{flag}={v}: must be positive")
    if config.max_latency_ms is not None and not config.latency_table:
        raise ConfigError("--max_latency_ms needs --latency_table")
    if config.latency_table and not os.path.isfile(config.latency_table):
        raise ConfigError(f"--latency_table={config.latency_table}: no such file")
    if config.max_bitops is not None and not config.bits:
        raise ConfigError("--max_bitops needs --bits (a full-precision space has no BitOps)")
    if config.top_k > config.population:
        raise ConfigError(f"--top_k={config.top_k} exceeds --population={config.population}")
    if config.name is not None:
        from models.spec import NAME_RE
        if not NAME_RE.fullmatch(config.name):
            raise ConfigError(f"--name={config.name!r}: use lower-case letters, digits, '_', '.', '-'")
    if config.execution == "eager" and config.strategy != "default":
        raise ConfigError(f"--strategy={config.strategy} needs --execution=graph")
    _check_space(config)
    if config.fix_block is not None and config.fix_block not in config.choices:
        raise ConfigError(f"--fix_block={config.fix_block}: one of --choices={','.join(config.choices)}")
    if config.fix_channel_ratio is not None and float(config.fix_channel_ratio) not in [
            float(r) for r in config.channel_ratios]:
        raise ConfigError(f"--fix_channel_ratio={config.fix_channel_ratio}: one of --channel_ratios="
                          f"{','.join(str(r) for r in config.channel_ratios)}")
    if config.fix_block is not None and config.fix_channel_ratio is not None and not config.bits:
        raise ConfigError("--fix_block with --fix_channel_ratio leaves nothing to search")
    if config.fix_path is not None:
        _check_fix_path(config)
    check_out_dir(config.out_dir, own=SETTINGS_FILE, files=OUT_FILES, dirs=OUT_DIRS)
    check_evolution_state(config)
    validate_dataset(config.dataset, config.data_dir, config.on_bad_image)
    classes = known_classes(config.dataset)
    if classes is not None:  # tfds names: checked once the data is loaded
        feasible_constraints(config, make_space(config, classes), load_latency(config))
    run_dir = _SupernetDir(config.out_dir, settings(config), settings_file=SETTINGS_FILE,
                           defaults={"choices": list(SHUFFLE_CHOICES),  # files written before --choices existed
                                     "fix_path": None})
    if run_dir.exists():
        keys = [k for k in SUPERNET_KEYS if config.phase != "evolution" or k not in SAMPLING_KEYS]
        run_dir.check(keys=keys, what="a supernet trained")
    elif config.phase == "evolution":
        raise ConfigError(f"--phase=evolution: no trained supernet in --out_dir={config.out_dir} "
                          "(run --phase=supernet)")
    return run_dir


def _check_fix_path(config: SearchSposConfig) -> None:
    """``--fix_path``: a path key of this space (one ``choice.ratio.bits`` triple per block), with bits to search
    and without the one-field fixes."""
    from search import spos as sp
    if config.fix_block is not None or config.fix_channel_ratio is not None:
        raise ConfigError("--fix_path holds every block's choice and ratio: drop --fix_block/--fix_channel_ratio")
    if len(config.bits) < 2:
        raise ConfigError("--fix_path searches bit widths only: give --bits at least two w:a pairs")
    try:
        arch = sp.from_key(config.fix_path)
    except (ValueError, TypeError):
        arch = None
    n_blocks = sum(config.depth) if config.space == "cifar" else None
    sizes = (len(config.choices), len(config.channel_ratios))
    if arch is None or arch.ndim != 2 or arch.shape[1] != 3 or (n_blocks is not None and arch.shape[0] != n_blocks) \
            or (arch < 0).any() or (arch[:, 0] >= sizes[0]).any() or (arch[:, 1] >= sizes[1]).any():
        raise ConfigError(f"--fix_path={config.fix_path!r}: a path key of this space, one choice.ratio.bits index "
                          f"triple per block joined by '-' ({n_blocks or 'one per block'} blocks, choice < "
                          f"{sizes[0]}, ratio < {sizes[1]}), e.g. a search's summary.json 'best'")


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


def _data_args(config: SearchSposConfig) -> dict:
    return dict(data_dir=config.data_dir, seed=config.seed, holdout=config.holdout, limit=config.limit,
                on_bad_image=config.on_bad_image)


def evaluation_arrays(config: SearchSposConfig, size: int):
    """What every candidate is scored on: ``(recal_x, val_x, val_y, val_info)`` — ``config.recal_images`` training
    images (shuffled with ``config.seed``) for BN recalibration and the first ``config.val_images`` of the held-out
    split. The same arrays for the same ``dataset``, ``holdout``, ``limit``, ``eval_batch`` and ``seed`` in any process
    (the shuffle's order depends on TensorFlow's global seed too, which is set here)."""
    import tensorflow as tf

    from inputs.classification import load
    tf.random.set_seed(config.seed)
    common = _data_args(config)
    recal_ds, _ = load(config.dataset, "train", image_size=size, batch_size=config.eval_batch, training=False,
                       **common)
    val_ds, val_info = load(config.dataset, "holdout", image_size=size, batch_size=config.eval_batch,
                            training=False, **common)
    recal_x, _ = _arrays(recal_ds.shuffle(64, seed=config.seed), config.recal_images)
    val_x, val_y = _arrays(val_ds, config.val_images)
    return recal_x, val_x, val_y, val_info


def run(config: SearchSposConfig) -> dict:
    """Validates, runs the phases of ``config`` (resuming from ``out_dir``), writes every output; returns
    ``summary.json``'s content."""
    run_dir = validate(config)
    os.makedirs(config.out_dir, exist_ok=True)

    import keras
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # per-branch functions compile lazily; TF warns about each new trace

    from common.io import eprint, progress_bar, write_json, write_text
    from inputs.classification import known_classes, load
    from models import spec as spec_lib
    from models.weights import write_npz
    from reports import plots
    from search import evolution as ev
    from search import spos as sp
    from search.spos_net import build_supernet
    from search.spos_train import CandidateEvaluator, SposConfig, SposTrainer
    from training.distribute import make_strategy

    strategy = make_strategy(config.strategy, config.cpu_replicas, config.tpu)  # before any other TensorFlow work
    latency = load_latency(config)
    common = _data_args(config)
    size = 32 if config.space == "cifar" else 224
    train_ds, info = load(config.dataset, "train", image_size=size, batch_size=config.batch_size, training=True,
                          repeat=True, **common)
    space = make_space(config, info.num_classes)
    if known_classes(config.dataset) is None:  # otherwise validate() sampled this very space already
        constraints = feasible_constraints(config, space, latency)
    else:
        constraints = constraints_of(config)
    if latency is not None:
        missing, total = table_coverage(config, space, latency)
        if missing:
            eprint(f"note: --latency_table={config.latency_table} lacks {missing} of the {total} parts of this "
                   "space's paths; their latency is its fit on MACs")
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_supernet(space, seed=config.seed)
    spos_config = SposConfig(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                             sampling=config.sampling, execution=config.execution, seed=config.seed)
    trainer = SposTrainer(model, spos_config, constraints, latency, run_dir.file("supernet"), strategy,
                          fixed=fixed_fields(config) if config.fix_path is not None else None)
    trainer.divergence = divergence_hint(config)
    writer = tf.summary.create_file_writer(run_dir.file("tensorboard"))
    bar = lambda what: lambda total: progress_bar(config.progress, total, what, leave=True)  # noqa: E731
    summary = {"space": space.to_json(), "constraints": constraints.limits(), "train_examples": info.num_examples}
    if config.phase in ("supernet", "both"):
        run_dir.start()
        if trainer.restore():
            eprint(f"resuming supernet training from epoch {int(trainer.epoch.numpy())}")
        steps = config.steps_per_epoch or max(1, info.num_examples // config.batch_size)
        history = trainer.run(train_ds, steps, writer=writer, progress=bar("supernet"))
        summary["supernet"] = {"epochs": config.epochs, "steps_per_epoch": steps, "last": history[-1],
                               "execution": config.execution, "strategy": config.strategy,
                               "replicas": strategy.num_replicas_in_sync}
    elif not trainer.restore() or int(trainer.epoch.numpy()) < config.epochs:
        raise ConfigError(f"--phase=evolution: the supernet in {config.out_dir} has not finished training "
                          "(rerun --phase=supernet with the same flags)")
    if config.phase == "supernet":
        write_json(run_dir.file("summary.json"), summary)
        return summary

    # --- evolution ---------------------------------------------------------------------------------------------
    recal_x, val_x, val_y, val_info = evaluation_arrays(config, size)
    evaluator = CandidateEvaluator(model, recal_x, val_x, val_y, config.eval_batch)
    ecfg = evolution_config(config)
    results = {}
    for kind in ("evolution", "random") if config.random_search else ("evolution",):
        search = ev.EvolutionSearch(space, evaluator, constraints, ecfg, run_dir.file(f"{kind}_state.json"), kind,
                                    latency, evaluation=evaluation_identity(config), fixed=fixed_fields(config))

        def log(s, record, kind=kind):
            with writer.as_default(step=record["iteration"]):
                tf.summary.scalar(f"{kind}/best_acc", record["best_acc"])
                tf.summary.scalar(f"{kind}/topk_mean_acc", record["topk_mean_acc"])
        results[kind] = search.run(progress=bar(kind), on_iteration=log)
    # the derived path: the best by the search's own criterion (supernet top-1 after BN recalibration) across
    # evolution and random search, recorded which; a tie goes to evolution
    rnd = results.get("random")
    random_better = bool(rnd and rnd["best_acc"] > results["evolution"]["best_acc"])
    derived_from = "random" if random_better else "evolution"
    best = results[derived_from]
    arch = sp.from_key(best["best"])
    name = config.name or f"spos_{config.space}_s{config.seed}"
    cost = sp.cost(space, arch, latency)
    metrics = {"supernet_val_acc": best["best_acc"], **{k: float(v) for k, v in cost.items()}}
    fixed = ("; fixed: " + ", ".join(f"--{k}={getattr(config, k)}" for k in FIX_FLAGS
                                      if getattr(config, k) is not None)) if fixed_fields(config) else ""
    notes = (f"SPOS: supernet {config.epochs} epochs ({config.sampling} sampling), evolution P={config.population} "
             f"T={config.iterations} top-k={config.top_k}{fixed}, BN recalibrated on {len(recal_x)} images, evaluated "
             f"on {len(val_x)} held-out images; constraints {constraints.limits()}; arch {best['best']} (found by "
             f"{derived_from} search)")
    prov = spec_lib.Provenance(method="spos", source=f"search space {config.space} (SPOS Table 2)",
                               target=config.max_macs, target_macs=int(config.max_macs) if config.max_macs else None,
                               seed=config.seed, data=config.dataset, notes=notes,
                               metrics=tuple(sorted(metrics.items())))
    derived = model.derive(arch, name=name, provenance=prov)
    weights = model.extract(arch, derived)
    write_npz(run_dir.file("derived_init.npz"), weights, "the derived weights",
              divergence_hint(config))  # before derived.json: no spec of a diverged supernet
    write_text(run_dir.file("derived.json"), spec_lib.dumps(derived))
    chance = 1.0 / space.classes
    plots.evolution_curve(results, run_dir.file("evolution.png"), chance)
    plots.population(space, results, config.max_macs, run_dir.file("population.png"), chance)
    summary.update({"best": best["best"], "best_acc": best["best_acc"], "best_cost": cost, "spec": name,
                    "recal_images": len(recal_x), "val_images": len(val_x), "holdout_examples": val_info.num_examples,
                    "evolution": {k: {"best_acc": r["best_acc"], "evaluated": r["evaluated"],
                                      "history": r["history"]} for k, r in results.items()},
                    "derived_from": derived_from, "random_found_better": random_better,
                    "fixed": {k: getattr(config, k) for k in FIX_FLAGS
                              if getattr(config, k) is not None}})
    if random_better:
        summary["note"] = (f"random search found a better path ({rnd['best_acc']:.4f} vs evolution's "
                           f"{results['evolution']['best_acc']:.4f}); derived.json is random search's path: on "
                           "this budget evolution did not beat its baseline")
    write_json(run_dir.file("summary.json"), summary)
    return summary
