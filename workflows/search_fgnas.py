"""FGNAS (Kim et al.) to a params or MACs budget (``python -m recipes.search_fgnas``): the config, its
TensorFlow-free validation, and the run — the paper's four steps (§4.2):

1. a backbone and candidate operations (``--space``, ``--kernels``, ``--acts``; :mod:`search.fgnas_space`);
2. pre-train the supernet with every gate on (``--pretrain_epochs``);
3. train weights and gates on ``CE + λ·R/R₀`` until the hard architecture's resource is at or below ``--target``
   (at most ``--search_epochs``; :class:`search.fgnas_train.FgnasSearch`), then freeze the gates;
4. fine-tune the derived model (``--finetune_epochs``, ``workflows.train`` from the extracted weights: the derived
   model computes what the supernet with frozen gates computes, with one operation per branch).

Writes under ``out_dir``: ``derived.json`` (or ``output``; provenance ``fgnas``), ``derived_init.npz`` (weights
extracted from the supernet), ``fgnas_layers.png`` (per layer: pruned/single/compositional channels and channels
per operation, the paper's Fig. 6–7), ``history.json``, ``summary.json``, ``tensorboard/``, ``checkpoints/``,
``search_settings.json`` (a rerun resumes; other settings are refused before TensorFlow is imported) and, with
fine-tuning, ``finetune/`` (a ``recipes.train`` run directory: ``weights.npz``, ``model_card.json``; it resumes too).
"""
from __future__ import annotations

import dataclasses
import os

from common.checks import (
    CHANNELS_MAX,
    LAM_MAX,
    LR_MAX,
    ConfigError,
    check_at_least,
    check_at_most,
    check_not_run_file,
    check_one_of,
    check_writable,
)
from common.rundir import RunDir

SETTINGS_FILE = "search_settings.json"
# What a search writes in --out_dir besides SETTINGS_FILE (and derived.json without --output; finetune/ holds a
# workflows.train run): checked before any work (common.checks.check_run_outputs).
OUT_FILES = ("history.json", "derived_init.npz", "fgnas_layers.png", "summary.json", "checkpoints/checkpoint",
             "checkpoints/history.json")
OUT_DIRS = ("checkpoints", "tensorboard", "finetune")
RESUME_KEYS = ("dataset", "space", "width", "kernels", "acts", "input_size", "resource", "target", "lam",
               "pretrain_epochs", "search_epochs", "batch_size", "latency_model", "steps_per_epoch", "limit", "w_lr",
               "psi_lr", "psi_optimizer", "input_count", "gate_init", "gating", "normalize", "refill", "seed")
# Identity keys added later: a settings file written before them is read with the value every search had then.
ADDED_SETTINGS = {"latency_model": "", "gating": "full", "normalize": "supernet", "refill": False}
NORMALIZE = ("target", "supernet")  # search.fgnas_train.NORMALIZE
SPACES = ("vgg", "mbconv")
RESOURCES = ("params", "macs", "latency")  # search.fgnas_space.RESOURCES
PSI_OPTIMIZERS = ("sgd", "adam")  # search.fgnas_train.PSI_OPTIMIZERS
INPUT_COUNTS = ("deployed", "paper")  # search.fgnas.INPUT_COUNTS
GATINGS = ("full", "no_prune", "one_op")  # search.fgnas.GATINGS
# Default gate learning rate with --normalize=target (SGD): the push per MAC is λ/T whatever the space; for FGNAS(P)
# at half the backbone's MACs it is the same push as the supernet default below.
PSI_LR_TARGET = 0.1
# Default gate learning rate per operation with --normalize=supernet (SGD). Measured on 10k CIFAR-10 images, VGG w12,
# FGNAS(P) to half the MACs, one seed (`python -m benchmarks.fgnas_ablation --normalize=supernet --variants=P
# --fractions=0.5 --psi_lr=…`): lr 10 reached the target 24 gate steps in and fine-tuned to 61.7% (run not kept);
# lr 1, 120 steps, 64.0% (results/fgnas_ablation_lr1.json); lr 0.2, 540 steps, 65.8%
# (results/fgnas_ablation_supernet.json); the uniform-width net at those MACs: 68.9%. The per-gate gradient of λ·R/R₀
# shrinks as 1/(operations × channels), so M operations get M × this.
PSI_LR_PER_OP = 0.2
GATE_INIT_MAX = 100.0  # --gate_init: beyond it no gate learning rate in range turns a gate off within a search


@dataclasses.dataclass(frozen=True)
class SearchFgnasConfig:
    """One search; the fields are the flags of ``recipes.search_fgnas`` (see its ``--help``)."""

    target: float | None = None
    dataset: str = "shapes"
    data_dir: str | None = None
    on_bad_image: str = "raise"
    space: str = "vgg"
    width: int = 12
    kernels: tuple[int, ...] = (3,)
    acts: tuple[str, ...] = ("relu",)
    input_size: int = 32
    resource: str = "macs"
    latency_model: str = ""  # --resource=latency: an AffineLatency JSON (python -m benchmarks.fgnas_latency)
    lam: float = 1.0
    pretrain_epochs: int = 2
    search_epochs: int = 10
    finetune_epochs: int = 0
    batch_size: int = 64
    steps_per_epoch: int | None = None
    limit: int | None = None
    val_limit: int = 1000
    finetune_val_limit: int | None = None  # None: the whole test split, scored after the last fine-tune epoch
    w_lr: float = 0.05
    psi_lr: float | None = None  # None: PSI_LR_PER_OP × the number of operations
    psi_optimizer: str = "sgd"
    input_count: str = "deployed"
    gate_init: float = 2.0
    gating: str = "full"
    normalize: str = "target"
    refill: bool = True
    seed: int = 0
    name: str | None = None
    output: str | None = None
    out_dir: str = "runs/search_fgnas"
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class SearchFgnasPlan:
    run_dir: RunDir
    classes: int | None
    latency: object = None  # search.fgnas_latency.AffineLatency with --resource=latency


def settings(config: SearchFgnasConfig) -> dict:
    out = {k: getattr(config, k) for k in RESUME_KEYS}
    out["kernels"], out["acts"] = list(config.kernels), list(config.acts)
    return out


def make_space(config: SearchFgnasConfig, classes: int):
    """The space of ``config`` with a ``classes``-way classifier (TensorFlow-free).

    Raises:
        ConfigError: the kernels, activations or width make no valid space.
    """
    from search.fgnas_space import mbconv_space, vgg_space
    try:
        if config.space == "vgg":
            space = vgg_space(config.width, config.kernels, config.acts, classes, config.input_size)
        else:
            space = mbconv_space(config.kernels, config.acts, classes=classes, input_size=config.input_size)
    except ValueError as e:
        raise ConfigError(f"--space={config.space} --kernels={','.join(map(str, config.kernels))} "
                          f"--acts={','.join(config.acts)}: {e}") from None
    return space


def psi_lr(config: SearchFgnasConfig, space) -> float:
    """The gate learning rate: ``--psi_lr``, or `PSI_LR_TARGET` (``--normalize=target``), or `PSI_LR_PER_OP` × the
    number of operations (``--normalize=supernet``)."""
    if config.psi_lr is not None:
        return config.psi_lr
    return PSI_LR_TARGET if config.normalize == "target" else PSI_LR_PER_OP * len(space.ops)


def reachable(space, resource: str, latency=None) -> tuple[float, float]:
    """The cheapest (one channel of the cheapest operation per layer) and dearest (every gate on) architectures'
    resource (predicted ms for ``latency``)."""
    import numpy as np
    cost = (lambda a: latency.predict(space, a)) if resource == "latency" else (  # noqa: E731
        lambda a: space.cost(a, resource))
    costs = []
    for i in range(len(space.ops)):
        arch = [np.zeros((len(space.ops), layer.channels), bool) for layer in space.layers()]
        for a in arch:
            a[i, 0] = True
        costs.append(cost(arch))
    return min(costs), cost(space.full_arch())


def load_latency(config: SearchFgnasConfig, space):
    """The ``--latency_model`` for ``space`` (TensorFlow-free): readable, the right format, every condition."""
    from search.fgnas_latency import AffineLatency
    if not config.latency_model:
        raise ConfigError("--resource=latency needs --latency_model=PATH (python -m benchmarks.fgnas_latency writes "
                          "one for this host)")
    try:
        model = AffineLatency.load(config.latency_model)
        model.layer_coefs(space)
    except OSError as e:
        raise ConfigError(f"--latency_model={config.latency_model}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--latency_model={config.latency_model}: {e}") from None
    return model


def check_target(config: SearchFgnasConfig, space, latency=None) -> None:
    lo, hi = reachable(space, config.resource, latency)
    if not lo < config.target < hi:
        raise ConfigError(f"--target={config.target:.4g} is outside what the space can reach ({lo:.4g} … {hi:.4g} "
                          f"{config.resource})")


def divergence_hint(config) -> str:
    """What to change when the search's loss or weights become NaN or infinite (`common.errors.Diverged`)."""
    return (f"lower --w_lr (it is {config.w_lr:g}), --psi_lr or --lam ({config.lam:g})"
            "; no derived spec or weights were written: rerun with a new --out_dir")


def validate(config: SearchFgnasConfig) -> SearchFgnasPlan:
    """Everything checkable without TensorFlow (values, space, dataset, the run directory's settings, the target
    when the class count is known)."""
    from inputs.classification import check_eval_split, known_classes
    from inputs.classification import validate as validate_dataset

    if config.target is None or config.target <= 0:
        raise ConfigError("--target: required, a positive number of parameters, MACs or milliseconds (--resource)")
    check_one_of(space=(config.space, SPACES), resource=(config.resource, RESOURCES),
                 psi_optimizer=(config.psi_optimizer, PSI_OPTIMIZERS), input_count=(config.input_count, INPUT_COUNTS),
                 gating=(config.gating, GATINGS), normalize=(config.normalize, NORMALIZE))
    check_at_least(width=(config.width, 1), input_size=(config.input_size, 8),
                   pretrain_epochs=(config.pretrain_epochs, 0), search_epochs=(config.search_epochs, 1),
                   finetune_epochs=(config.finetune_epochs, 0), batch_size=(config.batch_size, 1),
                   steps_per_epoch=(config.steps_per_epoch, 1), limit=(config.limit, 2),
                   val_limit=(config.val_limit, 0), finetune_val_limit=(config.finetune_val_limit, 0),
                   lam=(config.lam, 0.0), w_lr=(config.w_lr, 0.0),
                   psi_lr=(config.psi_lr, 0.0) if config.psi_lr is not None else (0.0, 0.0))
    check_at_most(width=(config.width, CHANNELS_MAX), lam=(config.lam, LAM_MAX), w_lr=(config.w_lr, LR_MAX),
                  psi_lr=(config.psi_lr, LR_MAX))
    if not 0 < config.gate_init <= GATE_INIT_MAX:
        raise ConfigError(f"--gate_init={config.gate_init}: gates start on with this margin ψ_on − ψ_off, in (0, "
                          f"{GATE_INIT_MAX:g}] (a huge margin never lets a gate turn off: the search keeps every "
                          "channel)")
    if config.space != "vgg" and config.width != 12:
        raise ConfigError(f"--width applies to --space=vgg only (got --space={config.space})")
    if config.name is not None:
        from models.spec import NAME_RE
        if not NAME_RE.fullmatch(config.name):
            raise ConfigError(f"--name={config.name!r}: use lower-case letters, digits, '_', '.', '-'")
    space = make_space(config, 10)  # kernels, acts and the backbone, before the data is scanned
    latency = load_latency(config, space) if config.resource == "latency" else None
    if config.latency_model and config.resource != "latency":
        raise ConfigError("--latency_model is for --resource=latency")
    from workflows import train
    finetune = (train.SETTINGS_FILE,) + train.OUT_FILES
    run_dir = RunDir(config.out_dir, settings(config), settings_file=SETTINGS_FILE, defaults=ADDED_SETTINGS,
                     files=OUT_FILES + (() if config.output else ("derived.json",))
                     + tuple(f"finetune/{n}" for n in finetune),
                     dirs=OUT_DIRS + tuple(f"finetune/{n}" for n in train.OUT_DIRS))
    run_dir.check(what="a search")
    if config.output:  # the derived spec's path, checked before the search rather than at its end
        check_writable(config.output, "--output", latency_model=config.latency_model)
        check_not_run_file(config.output, "--output", config.out_dir)
    validate_dataset(config.dataset, config.data_dir, config.on_bad_image)
    if config.val_limit or (config.finetune_epochs and config.finetune_val_limit != 0):
        check_eval_split(config.dataset, "pass --val_limit=0 (and --finetune_val_limit=0) to search without it")
    classes = known_classes(config.dataset)
    if classes is not None:
        check_target(config, make_space(config, classes), latency)
    return SearchFgnasPlan(run_dir, classes, latency)


def run(config: SearchFgnasConfig) -> dict:
    """Validates, searches (resuming from ``out_dir``), writes every output, fine-tunes; returns the summary."""
    plan = validate(config)
    run_dir = plan.run_dir
    os.makedirs(config.out_dir, exist_ok=True)

    import keras
    import tensorflow as tf

    from common.io import eprint, progress_bar, write_json, write_text
    from inputs.classification import load
    from models import spec as spec_lib
    from models.counting import count
    from models.weights import write_npz
    from reports import plots
    from search import fgnas
    from search.fgnas_train import FgnasConfig, FgnasSearch

    keras.utils.set_random_seed(config.seed)
    size = config.input_size
    train_ds, info = load(config.dataset, "train", image_size=size, batch_size=config.batch_size, training=True,
                          repeat=True, data_dir=config.data_dir, seed=config.seed, limit=config.limit,
                          on_bad_image=config.on_bad_image)
    val_ds = None
    if config.val_limit:
        val_ds, _ = load(config.dataset, "test", image_size=size, batch_size=config.batch_size, training=False,
                         data_dir=config.data_dir, limit=config.val_limit, on_bad_image=config.on_bad_image)
    space = make_space(config, info.num_classes)
    check_target(config, space, plan.latency)
    steps = config.steps_per_epoch or max(1, info.num_examples // config.batch_size)
    model = fgnas.build_supernet(space, gate_init=config.gate_init, gating=config.gating)
    search_config = FgnasConfig(target=config.target, resource=config.resource, lam=config.lam,
                                pretrain_epochs=config.pretrain_epochs, search_epochs=config.search_epochs,
                                w_lr=config.w_lr, psi_lr=psi_lr(config, space), psi_optimizer=config.psi_optimizer,
                                input_count=config.input_count, normalize=config.normalize, refill=config.refill,
                                seed=config.seed)
    search = FgnasSearch(model, space, search_config, checkpoint_dir=run_dir.file("checkpoints"),
                         latency=plan.latency)
    search.divergence = divergence_hint(config)
    run_dir.start()
    resumed = search.restore()
    if resumed:
        eprint(f"resuming from epoch {int(search.epoch.numpy())} in {config.out_dir}")
    writer = tf.summary.create_file_writer(run_dir.file("tensorboard"))
    bar = lambda total: progress_bar(config.progress, total, "fgnas", unit="step", leave=True)  # noqa: E731
    history = search.run(train_ds, steps, val_ds=val_ds, writer=writer, progress=bar)
    run_dir.write_json("history.json", history)

    net = search.net
    arch = net.arch()
    budget = f"{config.target:g}ms" if config.resource == "latency" else f"{config.target / 1e6:g}m"
    name = config.name or f"fgnas_{config.space}_{config.resource}_{budget}".replace(".", "p")
    backbone = count(space.backbone)
    reached = search.reached
    last = history[-1] if history else {}
    val = last.get("val_acc")
    refill = next((h["refill"] for h in history if h.get("refill")), None)  # what the stopping step gave back
    exact = count(space.derive(arch))
    metrics = {"macs": float(exact.macs), "params": float(exact.params), "search_steps": float(search.step.numpy())}
    if val is not None:
        metrics["supernet_val_acc"] = float(val)
    prov = spec_lib.Provenance(
        method="fgnas", source=f"FGNAS on {space.backbone.name}, ops {[f'{k}x{k}/{a}' for k, a in space.ops]}",
        target=config.target, target_macs=int(round(config.target)) if config.resource == "macs" else None,
        seed=config.seed, data=config.dataset, metrics=tuple(sorted(metrics.items())),
        notes=(f"FGNAS: {config.resource} regularizer lambda={config.lam} (R/R0, R0: {config.normalize}), "
               f"{config.pretrain_epochs} pre-train "
               f"+ <= {config.search_epochs} gate epochs x {steps} steps, batch {config.batch_size}, psi "
               f"{config.psi_optimizer} lr {psi_lr(config, space):g}, input count {config.input_count}, "
               f"gating {config.gating}; "
               + (f"target reached at step {int(search.reached_step.numpy())}" if reached else "target NOT reached")
               + (f"; refill turned {refill['gates_turned_on']} gates back on ({refill['before']:.6g} -> "
                  f"{refill['after']:.6g})" if refill else "")))
    derived = net.derive(arch, name=name, provenance=prov)
    output = config.output or run_dir.file("derived.json")
    weights = net.extract(arch, derived)
    write_npz(run_dir.file("derived_init.npz"), weights, "the derived weights",
              divergence_hint(config))  # before derived.json: no spec of a diverged search
    write_text(output, spec_lib.dumps(derived))
    rows = space.summary(arch)
    resource_now = {"params": exact.params, "macs": exact.macs}.get(config.resource)
    if config.resource == "latency":
        resource_now = plan.latency.predict(space, arch)
    plots.fgnas_layers(rows, run_dir.file("fgnas_layers.png"),
                       f"{name}: {exact.macs / 1e6:.2f}M MACs, {exact.params / 1e3:.1f}k params "
                       f"({config.resource} target {config.target:.4g}{'' if reached else ', NOT reached'}); "
                       f"backbone {backbone.macs / 1e6:.2f}M MACs")
    channels = sum(r["channels"] for r in rows)
    summary = {"spec": output, "name": name, "resource": config.resource, "target": config.target,
               "reached": reached, "reached_step": int(search.reached_step.numpy()) if reached else None,
               "refill": refill,
               "resource_value": resource_now, "vs_target": resource_now / config.target - 1,
               "macs": exact.macs, "params": exact.params,
               "backbone_macs": backbone.macs, "backbone_params": backbone.params,
               "supernet_macs": space.cost(space.full_arch(), "macs"),
               "kept_share": sum(r["kept"] for r in rows) / channels,
               "compositional_share": sum(r["compositional"] for r in rows) / channels,
               "layers": rows, "supernet_val_acc": val, "val_examples": config.val_limit,
               "steps_per_epoch": steps, "train_examples": info.num_examples, "resumed": resumed}
    if not reached:
        eprint(f"warning: after {config.search_epochs} search epochs the architecture's {config.resource} is "
               f"{resource_now:,.4f} > --target={config.target:,.4f}: raise --lam or --psi_lr, or --search_epochs")
    if config.finetune_epochs:
        summary["finetune"] = _finetune(config, output, run_dir)
    write_json(run_dir.file("summary.json"), summary)
    return summary


def _finetune(config: SearchFgnasConfig, spec_file: str, run_dir) -> dict:
    """Step 4: trains the derived model from its extracted weights (``workflows.train`` into ``finetune/``); a
    finished fine-tune with the same settings is not repeated."""
    import json

    from workflows import train
    out = run_dir.file("finetune")
    cfg = train.TrainConfig(
        model=spec_file, weights=run_dir.file("derived_init.npz"), dataset=config.dataset, data_dir=config.data_dir,
        on_bad_image=config.on_bad_image, input_size=config.input_size, epochs=config.finetune_epochs,
        batch_size=config.batch_size, steps_per_epoch=config.steps_per_epoch, limit=config.limit,
        val_limit=config.finetune_val_limit, val_freq=config.finetune_epochs, lr=config.w_lr, momentum=0.9,
        nesterov=True, weight_decay=1e-4,
        label_smoothing=0.0, seed=config.seed, out_dir=out, progress=config.progress,
        produced_by="recipes.search_fgnas (fine-tune of the derived model)")
    card_file, card = os.path.join(out, "model_card.json"), None
    if os.path.exists(card_file):
        plan = train.validate(cfg)
        saved = plan.run_dir.saved_settings()
        if saved is not None and all(saved.get(k) == v for k, v in plan.run_dir.settings.items()):
            with open(card_file, encoding="utf-8") as f:
                card = json.load(f)
    if card is None:
        card = train.run(cfg).card or {}
    return {"dir": out, "weights": os.path.join(out, "weights.npz"),
            "val_top1": card.get("metrics", {}).get("val_top1"), "epochs": config.finetune_epochs}
