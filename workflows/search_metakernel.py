"""Meta-kernel search (Chen et al. 2019) to a MACs budget (``python -m recipes.search_metakernel``): the config, its
TensorFlow-free validation, and the run.

The run trains the supernet of :mod:`search.supernet` with :class:`search.differentiable.MetaKernelSearch` (weights
on the training split, α on a held-out part of it), optionally projects the argmax architecture onto the target
(:meth:`search.supernet.MetaKernelSupernet.project_to_target`), and writes under ``out_dir``: ``derived.json`` (or
``output``; the zoo spec, provenance ``metakernel``), ``derived_init.npz`` (its weights extracted from the supernet),
``derived_arch.npz`` (every block's per-filter choice indices, by block name),
``kernel_distribution.png`` (the paper's Fig. 6), ``alpha_trajectories.png``, ``history.json``, ``summary.json``,
``tensorboard/``, ``checkpoints/`` (resumed by a rerun) and ``search_settings.json`` (`common.rundir.RunDir`: a rerun
with other settings is refused before TensorFlow is imported).
"""
from __future__ import annotations

import dataclasses
import os

from common.checks import (
    DECAY_MAX,
    LAM_MAX,
    LR_MAX,
    WIDTH_MAX,
    ConfigError,
    check_at_least,
    check_at_most,
    check_not_run_file,
    check_one_of,
    check_writable,
)
from common.rundir import RunDir
from training.distribute import STRATEGIES

SETTINGS_FILE = "search_settings.json"
# What a search writes in --out_dir besides SETTINGS_FILE (and derived.json without --output): checked before any
# work (common.checks.check_run_outputs).
OUT_FILES = ("history.json", "derived_init.npz", "derived_arch.npz", "kernel_distribution.png",
             "alpha_trajectories.png", "summary.json", "checkpoints/checkpoint", "checkpoints/history.json",
             "checkpoints/argmax.npz")
OUT_DIRS = ("checkpoints", "tensorboard")
# Settings that must match to resume a search in an existing out_dir.
RESUME_KEYS = ("dataset", "space", "width", "depth", "input_size", "candidates", "dw_mode", "target_macs", "lam",
               "eta", "tau_start", "tau_end", "epochs", "warmup_epochs", "batch_size", "steps_per_epoch", "holdout",
               "limit", "w_lr", "a_lr", "seed", "cost_form", "alpha_data", "a_weight_decay", "teacher", "temperature",
               "mix", "mix_alpha", "budget_input_size", "feedback", "latency_table", "target_ms", "a_entropy")
# Identity keys added later: a settings file written before them is read with the value every search had then.
ADDED_SETTINGS = {"teacher": "", "temperature": 1.0, "mix": "none", "mix_alpha": 0.2, "budget_input_size": None,
                  "feedback": False, "latency_table": "", "target_ms": None, "a_entropy": 0.0}
SPACES = ("cifar", "imagenet", "ablation", "lite0")
ABLATION_EXPAND = 6  # the ablation supernet's expansion ratio (its baselines use 3, scaled to match MACs)
DW_MODES = ("meta", "multi")
COST_FORMS = ("paper", "pull")  # search.differentiable.COST_FORMS (kept here: no TensorFlow before validation)
ALPHA_DATA = ("holdout", "same")
NEAR_CHANCE = 1.5  # an argmax supernet below 1.5 × chance accuracy is reported as near chance


@dataclasses.dataclass(frozen=True)
class SearchMetakernelConfig:
    """One search; the fields are the flags of ``recipes.search_metakernel`` (see its ``--help``)."""

    target_macs: float | None = None
    latency_table: str = ""  # E-DNAS latency loss: a per-filter table (search.kernel_latency), budget --target_ms
    target_ms: float | None = None
    dataset: str = "shapes"
    data_dir: str | None = None
    on_bad_image: str = "raise"  # folder: images that cannot be decoded: raise (naming the file) or skip
    space: str = "cifar"
    width: float = 1.0
    depth: int = 1
    input_size: int | None = None
    candidates: tuple[int, ...] = (3, 5, 7)
    dw_mode: str = "meta"
    lam: float = 2.0
    eta: float = 0.1
    cost_form: str = "paper"
    alpha_data: str = "holdout"
    tau_start: float = 5.0
    tau_end: float = 0.5
    epochs: int = 10
    warmup_epochs: int = 0
    batch_size: int = 64
    steps_per_epoch: int | None = None
    holdout: float = 0.2
    limit: int | None = None
    val_limit: int = 1000
    w_lr: float = 0.05
    a_lr: float = 1e-2
    a_weight_decay: float = 0.0
    a_entropy: float = 0.0  # β of the choice-entropy term, ramped 0 → β over the search (0: the paper's objective)
    project: bool = True
    tolerance: float = 0.03
    seed: int = 0
    budget_input_size: int | None = None  # count --target_macs at this input size (default: the training size)
    teacher: str = ""  # MODEL:WEIGHTS: distil (weights and α) from a frozen teacher instead of the labels
    temperature: float = 1.0
    mix: str = "none"
    mix_alpha: float = 0.2
    feedback: bool = False  # E-DNAS feedback block: two weight paths per step on two batches, merged by their losses
    name: str | None = None
    output: str | None = None
    out_dir: str = "runs/search_metakernel"
    strategy: str = "default"
    cpu_replicas: int = 1
    tpu: str = ""
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class SearchMetakernelPlan:
    """What a config resolves to before TensorFlow is imported."""

    candidates: tuple[int, ...]  # sorted
    run_dir: RunDir
    teacher: tuple | None = None  # training.distill.check_teacher's (spec, weights path, arrays)
    latency: object = None  # search.kernel_latency.KernelLatency with --latency_table


def settings(config: SearchMetakernelConfig) -> dict:
    """The identity of a search (``search_settings.json``). Candidates are kept as the strings the flag list gave
    before configs existed, so older run directories still resume."""
    out = {k: getattr(config, k) for k in RESUME_KEYS}
    out["candidates"] = [str(c) for c in config.candidates]
    return out


def make_space(config: SearchMetakernelConfig, candidates, classes: int):
    """The search space of ``config`` (TensorFlow-free)."""
    from search.metakernel_space import ablation_space, cifar_space, imagenet_space, lite0_space
    if config.space == "lite0":
        space = lite0_space(candidates, classes)
        return space.replace(input_size=config.input_size) if config.input_size else space
    if config.space == "cifar":
        return cifar_space(config.width, config.depth, candidates, config.input_size or 32, classes)
    if config.space == "ablation":
        return ablation_space(candidates, ABLATION_EXPAND, classes)
    space = imagenet_space(candidates).replace(classes=classes)
    return space.replace(input_size=config.input_size) if config.input_size else space


def inherit_lite0(net, classes: int) -> None:
    """Seeds a ``lite0``-space supernet with EfficientNet-Lite0's ImageNet weights (zoo tag ``imagenet``): meta
    kernels are Lite0's kernels zero-padded to k_max, every other weight copied; with another class count the
    classifier keeps its fresh initialisation."""
    import numpy as np

    import zoo
    from common.io import eprint
    from models.weights import read_npz
    spec = zoo.get_spec("efficientnet_lite0")
    arrays = read_npz(zoo.weights_path("efficientnet_lite0", "imagenet"))
    if classes != 1000:
        arrays = {k: v for k, v in arrays.items() if not k.startswith("classifier/")}
        for v in net.model.get_layer("classifier").weights:
            arrays[f"classifier/{v.name.split('/')[-1]}"] = np.asarray(v)
    net.inherit(arrays, spec)
    eprint("supernet seeded with efficientnet_lite0 'imagenet' weights (meta kernels: its kernels zero-padded)")


def budget_space(config: SearchMetakernelConfig, space):
    """``space`` at ``--budget_input_size`` (the resolution whose MACs the budget counts, e.g. 224 while training at
    128 for speed), or ``space`` itself. Only the blocks' input sizes differ, so E[MACs], the argmax's MACs, the
    projection and the derived spec (its input size too) follow the budget's resolution; the supernet trains at
    ``space``'s."""
    return space.replace(input_size=config.budget_input_size) if config.budget_input_size else space


def target(config: SearchMetakernelConfig) -> float:
    """The budget T of the cost loss: ``target_ms`` with a latency table, else ``target_macs``."""
    return config.target_ms if config.latency_table else config.target_macs


def check_target(config: SearchMetakernelConfig, space, latency=None) -> None:
    """The target must lie strictly between the space's cheapest and dearest architecture (MACs, or the latency
    table's milliseconds)."""
    if latency is not None:
        try:
            latency.check(space)
        except ValueError as e:
            raise ConfigError(f"--latency_table={config.latency_table}: {e}") from None
        lo, hi = latency.reach(space)
        if not lo < config.target_ms < hi:
            raise ConfigError(f"--target_ms={config.target_ms:g} is outside what the space can reach by the table "
                              f"({lo:.4g} … {hi:.4g} ms)")
        return
    lo, hi = space.macs_range()
    if not lo < config.target_macs < hi:
        size = space.input_size
        raise ConfigError(f"--target_macs={config.target_macs:.4g} is outside what the space can reach "
                          f"({lo:.4g} … {hi:.4g} MACs at {size}×{size})")


def divergence_hint(config) -> str:
    """What to change when the search's loss or weights become NaN or infinite (`common.errors.Diverged`)."""
    return (f"lower --w_lr (it is {config.w_lr:g}), --a_lr ({config.a_lr:g}) or --lam ({config.lam:g})"
            "; no derived spec or weights were written: rerun with a new --out_dir")


def validate(config: SearchMetakernelConfig) -> SearchMetakernelPlan:
    """Everything checkable without TensorFlow: values, candidates, the dataset, the run directory's settings and,
    when the class count is known without loading the data, whether the space can reach the target.

    Raises:
        InputError (subclasses): a bad value, named by its flag; `common.rundir.SettingsMismatch` when ``out_dir``
        holds a search with other settings.
    """
    from inputs.classification import known_classes
    from inputs.classification import validate as validate_dataset
    from search.metakernel_space import check_candidates

    latency = None
    if config.latency_table:
        from search.kernel_latency import KernelLatency
        if config.target_macs is not None:
            raise ConfigError("--target_macs and --latency_table: one budget per search (a latency table searches "
                              "to --target_ms)")
        if config.target_ms is None or config.target_ms <= 0:
            raise ConfigError("--target_ms: required with --latency_table, a positive number of milliseconds")
        try:
            latency = KernelLatency.load(config.latency_table)
        except ValueError as e:
            raise ConfigError(f"--latency_table: {e}") from None
    elif config.target_ms is not None:
        raise ConfigError("--target_ms needs --latency_table (python -m benchmarks.ednas_latency writes one)")
    elif config.target_macs is None or config.target_macs <= 0:
        raise ConfigError("--target_macs: required, a positive number of multiply-accumulates (e.g. 8e6)")
    try:
        cands = check_candidates(config.candidates)
    except ValueError as e:
        raise ConfigError(f"--candidates={','.join(str(c) for c in config.candidates)}: {e}") from None
    check_one_of(space=(config.space, SPACES), dw_mode=(config.dw_mode, DW_MODES),
                 strategy=(config.strategy, STRATEGIES), cost_form=(config.cost_form, COST_FORMS),
                 alpha_data=(config.alpha_data, ALPHA_DATA))
    check_at_least(epochs=(config.epochs, 1), warmup_epochs=(config.warmup_epochs, 0),
                   batch_size=(config.batch_size, 1), steps_per_epoch=(config.steps_per_epoch, 1),
                   depth=(config.depth, 1), input_size=(config.input_size, 16), limit=(config.limit, 2),
                   val_limit=(config.val_limit, 0), cpu_replicas=(config.cpu_replicas, 1),
                   budget_input_size=(config.budget_input_size, 16),
                   a_weight_decay=(config.a_weight_decay, 0.0), a_entropy=(config.a_entropy, 0.0),
                   width=(config.width, 0.05), lam=(config.lam, 0.0),
                   w_lr=(config.w_lr, 0.0), a_lr=(config.a_lr, 0.0))
    check_at_most(width=(config.width, WIDTH_MAX), lam=(config.lam, LAM_MAX), w_lr=(config.w_lr, LR_MAX),
                  a_lr=(config.a_lr, LR_MAX), a_weight_decay=(config.a_weight_decay, DECAY_MAX),
                  a_entropy=(config.a_entropy, LAM_MAX))
    if config.space != "cifar" and (config.width != 1.0 or config.depth != 1):
        raise ConfigError(f"--width/--depth apply to --space=cifar only (got --space={config.space})")
    if config.space == "lite0" and (config.dw_mode != "meta" or not {3, 5} <= set(cands)):
        raise ConfigError(f"--space=lite0 starts from Lite0's 3×3 and 5×5 kernels: it needs --dw_mode=meta and 3 and 5 "
                          f"among --candidates (got --dw_mode={config.dw_mode}, "
                          f"--candidates={','.join(map(str, cands))})")
    if config.space == "ablation" and config.input_size not in (None, 32):
        raise ConfigError(f"--input_size={config.input_size}: the ablation space is 32×32")
    if config.alpha_data == "holdout" and not 0 < config.holdout < 1:
        raise ConfigError(f"--holdout={config.holdout}: α trains on a held-out part (--alpha_data=holdout), so it "
                          "must be in (0, 1); --alpha_data=same trains α on the weights' batches")
    if not 0 < config.eta < 1:
        raise ConfigError(f"--eta={config.eta}: the slack of Eq. 6 must be in (0, 1)")
    if config.tau_end > config.tau_start:
        raise ConfigError(f"--tau_end={config.tau_end} is above --tau_start={config.tau_start}")
    if config.feedback and config.alpha_data != "holdout":
        raise ConfigError("--feedback merges two weight paths; α then trains on the held-out split "
                          "(--alpha_data=holdout)")
    if config.feedback and (config.strategy != "default" or config.cpu_replicas > 1):
        raise ConfigError("--feedback runs both paths on one device (--strategy=default)")
    if config.warmup_epochs >= config.epochs:
        raise ConfigError(f"--warmup_epochs={config.warmup_epochs} leaves no epoch for α (--epochs={config.epochs})")
    if config.name is not None:
        from models.spec import NAME_RE
        if not NAME_RE.fullmatch(config.name):
            raise ConfigError(f"--name={config.name!r}: use lower-case letters, digits, '_', '.', '-'")
    validate_dataset(config.dataset, config.data_dir, config.on_bad_image)
    run_dir = RunDir(config.out_dir, settings(config), settings_file=SETTINGS_FILE, defaults=ADDED_SETTINGS,
                     files=OUT_FILES + (() if config.output else ("derived.json",)), dirs=OUT_DIRS)
    run_dir.check(what="a search")
    if config.output:  # the derived spec's path, checked before the search rather than at its end
        check_writable(config.output, "--output", latency_table=config.latency_table)
        check_not_run_file(config.output, "--output", config.out_dir)
    classes = known_classes(config.dataset)
    if classes is not None:  # tfds names: checked once the data is loaded
        check_target(config, budget_space(config, make_space(config, cands, classes)), latency)
    from training.distill import check_teacher
    teacher = check_teacher(config.teacher, config.mix, config.temperature, config.mix_alpha, config.dataset, classes,
                            input_size(config))
    return SearchMetakernelPlan(cands, run_dir, teacher, latency)


def input_size(config: SearchMetakernelConfig) -> int:
    """The search's image size: ``--input_size``, else 224 for the ImageNet-sized spaces and 32 otherwise."""
    return config.input_size or (224 if config.space in ("imagenet", "lite0") else 32)


def _notes(config: SearchMetakernelConfig, cands, steps: int, moves: int) -> str:
    alpha = f"holdout {config.holdout}" if config.alpha_data == "holdout" else "alpha on the weights' batches"
    cost = f"latency table {config.latency_table}, " if config.latency_table else ""
    return (f"meta-kernel search ({config.dw_mode}), candidates {list(cands)}, {cost}cost {config.cost_form}, "
            f"lambda={config.lam}, eta={config.eta}, tau {config.tau_start}->{config.tau_end}, alpha lr {config.a_lr}, "
            f"{config.epochs} epochs ({config.warmup_epochs} warm-up) x {steps} steps, batch {config.batch_size}, "
            f"{alpha}; " + ("feedback block (two weight paths per step); " if config.feedback else "")
            + (f"projection moves={moves}" if config.project else "argmax, no projection"))


def run(config: SearchMetakernelConfig) -> dict:
    """Validates, searches (resuming from ``out_dir``), writes every output; returns ``summary.json``'s content."""
    plan = validate(config)
    cands, run_dir = plan.candidates, plan.run_dir
    os.makedirs(config.out_dir, exist_ok=True)

    import keras
    import numpy as np
    import tensorflow as tf

    from common.io import eprint, progress_bar, write_json, write_text
    from inputs.classification import load
    from models import spec as spec_lib
    from models.counting import count
    from models.weights import write_npz
    from reports import plots
    from search import supernet as sn
    from search.differentiable import MetaKernelSearch, SearchConfig
    from training.distribute import make_strategy

    strategy = make_strategy(config.strategy, config.cpu_replicas, config.tpu)
    keras.utils.set_random_seed(config.seed)
    holdout = config.holdout if config.alpha_data == "holdout" else 0.0  # "same": α trains on the weights' batches
    common = dict(batch_size=config.batch_size, data_dir=config.data_dir, seed=config.seed, holdout=holdout,
                  limit=config.limit, on_bad_image=config.on_bad_image)
    size = input_size(config)
    train_ds, info = load(config.dataset, "train", image_size=size, training=True, repeat=True, **common)
    arch_ds, holdout_examples = None, 0
    if holdout:
        arch_ds, arch_info = load(config.dataset, "holdout", image_size=size, training=True, repeat=True, **common)
        holdout_examples = arch_info.num_examples
    plain_ds = train_ds  # unmixed images: BatchNorm statistics of the derived model are estimated on these
    if plan.teacher is not None or config.mix != "none":  # soft targets: a teacher's view of each augmented batch
        from training.distill import pipeline
        one_hot = lambda x, y: (x, tf.one_hot(y, info.num_classes))  # noqa: E731
        train_ds, _ = pipeline(train_ds.map(one_hot), plan.teacher, config.teacher, config.mix, config.mix_alpha,
                               config.temperature, config.seed, info.num_classes, size)
        if arch_ds is not None:
            arch_ds, _ = pipeline(arch_ds.map(one_hot), plan.teacher, config.teacher, config.mix, config.mix_alpha,
                                  config.temperature, config.seed + 1, info.num_classes, size)
    val_ds = None
    if config.val_limit:
        val_ds, _ = load(config.dataset, "test", image_size=size, batch_size=config.batch_size, training=False,
                         data_dir=config.data_dir, limit=config.val_limit, on_bad_image=config.on_bad_image)
    space = make_space(config, cands, info.num_classes)
    cost_space = budget_space(config, space)  # the space whose MACs the budget counts (its input size)
    check_target(config, cost_space, plan.latency)
    steps = config.steps_per_epoch or max(1, info.num_examples // config.batch_size)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"--batch_size={config.batch_size} does not split over {strategy.num_replicas_in_sync} "
                          "replicas")

    with strategy.scope():
        model = sn.build_supernet(space, config.dw_mode, tau=config.tau_start, seed=config.seed)
    net = sn.MetaKernelSupernet(model, cost_space)  # derived specs and their MACs at the budget's input size
    search_config = SearchConfig(target=target(config), epochs=config.epochs, lam=config.lam, eta=config.eta,
                                 tau_start=config.tau_start, tau_end=config.tau_end, w_lr=config.w_lr,
                                 a_lr=config.a_lr, a_weight_decay=config.a_weight_decay, a_entropy=config.a_entropy,
                                 warmup_epochs=config.warmup_epochs, cost_form=config.cost_form,
                                 alpha_data=config.alpha_data, seed=config.seed, temperature=config.temperature,
                                 feedback=config.feedback)
    initial_expected = float(net.expected_cost()[0])  # uniform α, before any restore
    search = MetaKernelSearch(model, cost_space, search_config, checkpoint_dir=run_dir.file("checkpoints"),
                              strategy=strategy, latency=plan.latency)
    search.divergence = divergence_hint(config)
    run_dir.start()
    resumed = search.restore()
    if resumed:
        eprint(f"resuming from epoch {int(search.epoch.numpy())} in {config.out_dir}")
    elif config.space == "lite0":  # a fresh search starts from Lite0's ImageNet weights (issue 15's route)
        inherit_lite0(net, info.num_classes)
    writer = tf.summary.create_file_writer(run_dir.file("tensorboard"))
    bar = lambda total: progress_bar(config.progress, total, "search", unit="step", leave=True)  # noqa: E731
    history = search.run(train_ds, arch_ds, steps, val_ds=val_ds, writer=writer, progress=bar, recal_ds=plain_ds)

    run_dir.write_json("history.json", history)
    expected = float(net.expected_cost()[0])
    argmax_macs = net.macs()
    choice = net.choices()
    lat = plan.latency
    projected, moves, _ = net.project_to_target(target(config), config.tolerance, latency=lat)  # reported either way
    if config.project:
        choice = projected
    budget = (f"{config.target_ms:g}ms" if lat is not None else f"{config.target_macs / 1e6:g}m").replace(".", "p")
    name = config.name or f"mk_{config.space}_{budget}"
    last = history[-1] if history else {}
    argmax_acc = last.get("val_acc_argmax", float("nan"))
    filters = sum(len(c) for b, c in zip(net.blocks, choice) if b.searchable and b.dw.per_filter)
    moved_filters, moved_layers = net.changed_rows(projected)
    metrics = {"expected_macs": expected, "argmax_macs": float(argmax_macs),
               "projection_moves": float(moves) if config.project else float("nan"),
               "supernet_val_acc_argmax": argmax_acc}
    if lat is not None:
        metrics.update(expected_ms=float(search.expected_latency(model)), table_ms=lat.predict(cost_space, choice),
                       argmax_ms=lat.predict(cost_space, net.choices()))
    prov = spec_lib.Provenance(method="metakernel", source=f"search space {space.name}", target=target(config),
                               target_macs=None if lat is not None else int(round(config.target_macs)),
                               seed=config.seed, data=config.dataset, notes=_notes(config, cands, steps, moves),
                               metrics=())
    derived = net.derive(choice, name=name, provenance=prov)
    exact = count(derived)
    metrics["macs"] = float(exact.macs)
    metrics["params"] = float(exact.params)
    metrics = {k: v for k, v in metrics.items() if v == v}  # drop NaN (no validation split)
    derived = dataclasses.replace(derived, provenance=dataclasses.replace(
        prov, metrics=tuple(sorted(metrics.items()))))
    output = config.output or run_dir.file("derived.json")
    # derived_init.npz carries BN statistics of the derived architecture itself (not of the soft search mixtures)
    recal_batches = search.recalibrate((x for x, _ in plain_ds.take(search_config.recal_batches)), arch=choice)
    weights = net.extract(choice, derived)
    write_npz(run_dir.file("derived_init.npz"), weights, "the derived weights",
              divergence_hint(config))  # before derived.json: no spec of a diverged search
    # the derived choice of every filter (block name → choice indices): what another weight source needs to
    # extract the same architecture (e.g. benchmarks.metakernel_ab: the derived model from Lite0's own weights)
    write_npz(run_dir.file("derived_arch.npz"), {b.name: np.asarray(c) for b, c in zip(net.blocks, choice)})
    write_text(output, spec_lib.dumps(derived))

    layer_names, counts, labels = net.kernel_distribution(choice)
    acc_text = f", argmax supernet top-1 {argmax_acc:.3f}" if argmax_acc == argmax_acc else ""
    if lat is not None:
        title = (f"{name}: {metrics['table_ms']:.3f} ms by the table (target {config.target_ms:g} ms), "
                 f"{exact.macs / 1e6:.2f}M MACs\nE[latency] {metrics['expected_ms']:.3f} ms{acc_text}; projection "
                 f"changed {moved_filters if config.project else 0} of {filters} filters")
    else:
        title = (f"{name}: {exact.macs / 1e6:.2f}M MACs (target {config.target_macs / 1e6:.2f}M)\n"
                 f"argmax {argmax_macs / 1e6:.2f}M, E[MACs] {expected / 1e6:.2f}M{acc_text}"
                 f"; projection changed {moved_filters if config.project else 0} of {filters} filters")
    plots.kernel_distribution(layer_names, counts, labels, run_dir.file("kernel_distribution.png"), title)
    if history:
        plots.alpha_trajectories(history, layer_names, labels, run_dir.file("alpha_trajectories.png"),
                                 target(config), "ms" if lat is not None else "macs")
    chance = 1.0 / info.num_classes
    vs_target = lambda macs: None if lat is not None else macs / config.target_macs - 1  # noqa: E731
    near_chance = bool(argmax_acc == argmax_acc and argmax_acc < NEAR_CHANCE * chance)
    summary = {"spec": output, "name": name, "target_macs": config.target_macs, "macs": exact.macs,
               "params": exact.params, "macs_vs_target": vs_target(exact.macs),
               "initial_expected_macs": initial_expected, "expected_macs": expected, "argmax_macs": argmax_macs,
               "argmax_vs_target": vs_target(argmax_macs),
               "argmax_val_acc": argmax_acc if argmax_acc == argmax_acc else None,
               "val_examples": config.val_limit or 0, "argmax_near_chance": near_chance,
               "projected": config.project, "projection_moves": float(moves),
               "projection_filters_changed": moved_filters, "projection_layers_changed": moved_layers,
               "projection_moved_share": moved_filters / max(filters, 1),
               "searchable_filters": filters, "mixture": net.mixture(choice), "argmax_mixture": net.mixture(),
               "epochs": config.epochs, "steps_per_epoch": steps, "train_examples": info.num_examples,
               "holdout_examples": holdout_examples, "bn_recalibration_batches": recal_batches, "resumed": resumed,
               "history": history[-1:] or None}
    if lat is not None:
        summary.update(target_ms=config.target_ms, table_ms=metrics["table_ms"], expected_ms=metrics["expected_ms"],
                       argmax_ms=metrics["argmax_ms"],
                       table_ms_vs_target=metrics["table_ms"] / config.target_ms - 1,
                       latency_table=config.latency_table)
    write_json(run_dir.file("summary.json"), summary)
    if near_chance:
        eprint(f"warning: the argmax supernet scores {argmax_acc:.3f} on {config.val_limit} test images (chance "
               f"{chance:.3f}) after BN re-estimation: the search has not found a working architecture")
    return summary
