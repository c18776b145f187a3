"""The whole pipeline (``python -m recipes.pipeline``, ``make demo``): meta-kernel search → derived spec → retrain →
export float32 and int8 TFLite → LiteRT latency → a summary and plots.

Each stage is the command a user would run by hand (``python -m recipes.<stage> …``; `commands` spells them out),
run as a separate process by the caller's ``run_stage`` and writing into its own folder under ``out_dir``:
``search/``, ``train/``, ``export/``, ``latency/``. A stage whose result file already exists is skipped (search and
training also resume from their checkpoints). Writes ``summary.json`` and ``pipeline.png``.
"""
from __future__ import annotations

import dataclasses
import json
import os

from common.checks import WIDTH_MAX, ConfigError, check_at_least, check_at_most
from workflows import train as _train

STAGES = ("search", "train", "export_float32", "export_int8", "latency_float32", "latency_int8")
# What a run writes in --out_dir besides SETTINGS_FILE (search/ is checked by the search stage's own validate):
# checked before any stage runs (common.checks.check_run_outputs).
OUT_FILES = ("summary.json", "pipeline.png", *(f"logs/{s}.log" for s in STAGES),
             *(f"train/{n}" for n in (_train.SETTINGS_FILE, *_train.OUT_FILES)),
             *(f"export/model-{m}.tflite{e}" for m in ("float32", "int8") for e in ("", ".json")),
             *(f"latency/model-{m}.json" for m in ("float32", "int8")))
OUT_DIRS = ("logs", "search", "train", "export", "latency", *(f"train/{n}" for n in _train.OUT_DIRS))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The fields are the flags of ``recipes.pipeline`` (see its ``--help``)."""

    dataset: str = "shapes"
    data_dir: str | None = None
    on_bad_image: str = "raise"  # folder: images that cannot be decoded: raise (naming the file) or skip
    out_dir: str = "runs/demo"
    width: float = 0.5
    target_macs: float = 2.5e6
    search_epochs: int = 4
    train_epochs: int = 15
    steps_per_epoch: int | None = None
    batch_size: int = 64
    limit: int | None = None
    eval_examples: int = 500
    threads: int = 1
    runs: int = 200
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    summary: dict
    summary_path: str
    plot_path: str


def validate(config: PipelineConfig) -> None:
    """The data and the budget, checked without TensorFlow (each stage checks its own flags again).

    Raises:
        InputError (subclasses): a bad value, named by its flag.
    """
    from inputs.classification import validate as validate_data
    check_at_least(width=(config.width, 0.05), search_epochs=(config.search_epochs, 1),
                   train_epochs=(config.train_epochs, 1), steps_per_epoch=(config.steps_per_epoch, 1),
                   batch_size=(config.batch_size, 1), limit=(config.limit, 2), eval_examples=(config.eval_examples, 1),
                   threads=(config.threads, 1), runs=(config.runs, 1))
    check_at_most(width=(config.width, WIDTH_MAX))
    if config.target_macs <= 0:
        raise ConfigError("--target_macs: must be positive")
    run_dir(config).check(what="a pipeline")
    validate_data(config.dataset, config.data_dir, config.on_bad_image)
    # the search stage's own checks (budget reachable by the space, its run directory), before any stage runs
    from workflows import search_metakernel as sm
    sm.validate(search_config(config))


SETTINGS_FILE = "pipeline_settings.json"


def run_dir(config: PipelineConfig):
    """The run directory: every flag but ``--out_dir`` is the run's identity (a rerun with other flags would
    otherwise skip stages whose results exist and report them as its own)."""
    from common.rundir import RunDir
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "out_dir"}
    return RunDir(config.out_dir, settings, settings_file=SETTINGS_FILE, files=OUT_FILES, dirs=OUT_DIRS)


def search_config(config: PipelineConfig):
    """The search stage as a `workflows.search_metakernel.SearchMetakernelConfig` (the flags `commands` passes)."""
    from workflows.search_metakernel import SearchMetakernelConfig
    return SearchMetakernelConfig(
        dataset=config.dataset, data_dir=config.data_dir, on_bad_image=config.on_bad_image, width=config.width,
        target_macs=config.target_macs, epochs=config.search_epochs, batch_size=config.batch_size,
        steps_per_epoch=config.steps_per_epoch, limit=config.limit, val_limit=config.eval_examples, seed=config.seed,
        progress=False, out_dir=os.path.join(config.out_dir, "search"))


def commands(config: PipelineConfig) -> dict[str, tuple[list[str], str]]:
    """Stage → (``python -m`` arguments, the file that marks it done)."""
    out = config.out_dir
    data = [f"--dataset={config.dataset}", f"--on_bad_image={config.on_bad_image}"] + (
        [f"--data_dir={config.data_dir}"] if config.data_dir else [])
    steps = [f"--steps_per_epoch={config.steps_per_epoch}"] if config.steps_per_epoch else []
    limit = [f"--limit={config.limit}"] if config.limit else []
    spec, init = os.path.join(out, "search", "derived.json"), os.path.join(out, "search", "derived_init.npz")
    weights = os.path.join(out, "train", "weights.npz")
    cmds = {
        "search": (["recipes.search_metakernel", *data, f"--width={config.width}",
                    f"--target_macs={config.target_macs}", f"--epochs={config.search_epochs}",
                    f"--batch_size={config.batch_size}", *steps, *limit, f"--val_limit={config.eval_examples}",
                    f"--seed={config.seed}", "--noprogress", f"--out_dir={os.path.join(out, 'search')}"],
                   os.path.join(out, "search", "summary.json")),
        "train": (["recipes.train", f"--model={spec}", f"--weights={init}", *data, f"--epochs={config.train_epochs}",
                   f"--warmup_epochs={min(1, config.train_epochs - 1)}",
                   f"--batch_size={config.batch_size}", *steps, *limit, f"--val_limit={config.eval_examples}",
                   f"--seed={config.seed}", "--noprogress", f"--out_dir={os.path.join(out, 'train')}"],
                  os.path.join(out, "train", "model_card.json")),
    }
    for mode in ("float32", "int8"):
        tfl = os.path.join(out, "export", f"model-{mode}.tflite")
        cmds[f"export_{mode}"] = (["recipes.export_tflite", f"--model={spec}", f"--weights={weights}", *data,
                                   f"--mode={mode}", f"--check_examples={config.eval_examples}", f"--output={tfl}",
                                   f"--out_dir={os.path.join(out, 'export')}"], tfl + ".json")
        lat = os.path.join(out, "latency", f"model-{mode}.json")
        cmds[f"latency_{mode}"] = (["recipes.benchmark_latency", f"--model={tfl}", f"--threads={config.threads}",
                                    f"--runs={config.runs}", f"--json={lat}"], lat)
    return cmds


def _load(path):
    with open(path) as f:
        return json.load(f)


def summarize(config: PipelineConfig, cmds: dict, seconds: dict) -> dict:
    """The summary of finished stages, read from their result files."""
    search = _load(cmds["search"][1])
    card = _load(cmds["train"][1])
    models = {}
    for mode in ("float32", "int8"):
        report, lat = _load(cmds[f"export_{mode}"][1]), _load(cmds[f"latency_{mode}"][1])
        acc = (report.get("parity") or {}).get("accuracy") or {}
        models[mode] = {"tflite": report["tflite"], "bytes": report["file_bytes"], "top1": acc.get("litert"),
                        "keras_top1": acc.get("keras"), "agreement": report["parity"]["top1_agreement"],
                        "max_abs_diff": report["parity"]["max_abs_diff"],
                        "relative_max_abs_diff": report["parity"].get("relative_max_abs_diff"),
                        "latency": {k: lat[k] for k in ("median_ms", "p10_ms", "p90_ms", "runs", "threads")}}
    return {
        "name": search["name"], "data": config.dataset, "eval_examples": config.eval_examples,
        "threads": config.threads,
        "search": {k: search[k] for k in ("target_macs", "macs", "params", "expected_macs", "argmax_macs",
                                         "macs_vs_target", "spec")},
        "train": {"epochs": card["epochs"], "steps": card["steps"], "weights_sha256": card["sha256"],
                  **card["metrics"]},
        "models": models, "stage_seconds": seconds,
        "commands": {name: "python -m " + " ".join(args) for name, (args, _) in cmds.items()},
    }


def plot(summary: dict, path: str) -> None:
    """MACs vs target, accuracy of Keras / float32 / int8, file size and latency, as one PNG (atomically)."""
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    s, m = summary["search"], summary["models"]
    axes[0].bar(["target", "E[MACs]", "derived"], [s["target_macs"] / 1e6, s["expected_macs"] / 1e6, s["macs"] / 1e6],
                color=["grey", "tab:blue", "tab:green"])
    axes[0].set_title("search: MACs (M)")
    names = ["keras", "float32", "int8"]
    axes[1].bar(names, [summary["train"]["val_top1"], m["float32"]["top1"], m["int8"]["top1"]], color="tab:green")
    axes[1].set_ylim(0, 1)
    axes[1].set_title(f"top-1 ({summary['eval_examples']} test images)")
    axes[2].bar(names[1:], [m["float32"]["bytes"] / 1e3, m["int8"]["bytes"] / 1e3], color="tab:orange")
    axes[2].set_title("TFLite size (kB)")
    for i, mode in enumerate(names[1:]):
        lat = m[mode]["latency"]
        axes[3].bar(i, lat["median_ms"], color="tab:purple",
                    yerr=[[lat["median_ms"] - lat["p10_ms"]], [lat["p90_ms"] - lat["median_ms"]]], capsize=4)
    axes[3].set_xticks([0, 1], names[1:])
    axes[3].set_title(f"LiteRT latency, {summary['threads']} thread (ms, p10–p90)")
    fig.suptitle(f"{summary['name']} on {summary['data']}")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run(config: PipelineConfig, run_stage) -> PipelineResult:
    """Validates ``config``, runs the unfinished stages in order and writes the summary and plot.

    Args:
        run_stage: ``run_stage(name, args, log_path) -> seconds`` runs ``python -m *args`` (the command-line layer
            owns process handling, e.g. ``recipes.cli.run_stage``, which exits on a failed stage).
    """
    validate(config)
    out = config.out_dir
    run_dir(config).start()
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    cmds = commands(config)
    seconds = {}
    for i, name in enumerate(STAGES):
        args, done = cmds[name]
        if os.path.exists(done):
            print(f"[{i + 1}/{len(STAGES)}] {name}: done already ({done})", flush=True)
            continue
        print(f"[{i + 1}/{len(STAGES)}] {name}: python -m {' '.join(args)}", flush=True)
        seconds[name] = round(run_stage(name, args, os.path.join(out, "logs", f"{name}.log")), 1)
        print(f"      {seconds[name]:.0f} s", flush=True)
    from common.io import write_json
    summary = summarize(config, cmds, seconds)
    summary_path, plot_path = os.path.join(out, "summary.json"), os.path.join(out, "pipeline.png")
    write_json(summary_path, summary)
    plot(summary, plot_path)
    return PipelineResult(summary, summary_path, plot_path)
