"""The whole pipeline in one command (``make demo``): meta-kernel search → derived spec → retrain → export float32 and
int8 TFLite → LiteRT latency → a summary table and plots.

    python -m recipes.pipeline --out_dir=runs/demo                                   # synthetic shapes, ~7 min on 2 cores
    python -m recipes.pipeline --data=folder:../shared/data/cifar10_subset --out_dir=runs/demo_cifar

Each stage is the recipe a user would run by hand (``python -m recipes.<stage> …``, the exact command lines are in
``summary.json`` and the logs under ``OUT_DIR/logs/``), writing into its own folder: ``search/``, ``train/``,
``export/``, ``latency/``. A stage whose result already exists is skipped, and search and training resume from their
checkpoints, so rerunning the same command after a kill continues where it stopped. Writes ``summary.json`` and
``pipeline.png`` (MACs vs target, accuracy of Keras / float32 / int8, file size, latency) next to the search plots.
"""
from __future__ import annotations

import json
import os

from absl import flags

from recipes._cli import UsageError, print_rows, run, run_stage

FLAGS = flags.FLAGS
flags.DEFINE_string("data", "shapes", "Dataset of every stage: 'shapes' (built-in synthetic), 'folder:PATH' or a "
                                      "tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
flags.DEFINE_string("out_dir", "runs/demo", "Directory of all outputs (one sub-folder per stage).")
flags.DEFINE_float("width", 0.5, "Width multiplier of the 32×32 search space.", lower_bound=0.05)
flags.DEFINE_float("target_macs", 2.5e6, "MACs budget of the search.")
flags.DEFINE_integer("search_epochs", 4, "Search epochs.", lower_bound=1)
flags.DEFINE_integer("train_epochs", 15, "Retraining epochs of the derived model.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch of search and training (default: one pass).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size of search and training.", lower_bound=1)
flags.DEFINE_integer("limit", None, "Use only the first N training examples.", lower_bound=2)
flags.DEFINE_integer("eval_examples", 500, "Test examples for the accuracy of Keras, float32 and int8 TFLite.",
                     lower_bound=1)
flags.DEFINE_integer("threads", 1, "LiteRT threads of the latency benchmark.", lower_bound=1)
flags.DEFINE_integer("runs", 200, "Timed LiteRT runs per model.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of every stage.")

STAGES = ("search", "train", "export_float32", "export_int8", "latency_float32", "latency_int8")


def _commands(out: str) -> dict[str, tuple[list[str], str]]:
    """Stage → (recipe arguments, the file that marks it done)."""
    data = [f"--dataset={FLAGS.data}"] + ([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else [])
    steps = [f"--steps_per_epoch={FLAGS.steps_per_epoch}"] if FLAGS.steps_per_epoch else []
    limit = [f"--limit={FLAGS.limit}"] if FLAGS.limit else []
    spec, init = os.path.join(out, "search", "derived.json"), os.path.join(out, "search", "derived_init.npz")
    weights = os.path.join(out, "train", "weights.npz")
    cmds = {
        "search": (["recipes.search_metakernel", *data, f"--width={FLAGS.width}", f"--target_macs={FLAGS.target_macs}",
                    f"--epochs={FLAGS.search_epochs}", f"--batch_size={FLAGS.batch_size}", *steps, *limit,
                    f"--val_limit={FLAGS.eval_examples}", f"--seed={FLAGS.seed}", "--noprogress",
                    f"--out_dir={os.path.join(out, 'search')}"], os.path.join(out, "search", "summary.json")),
        "train": (["recipes.train", f"--model={spec}", f"--weights={init}", *data, f"--epochs={FLAGS.train_epochs}",
                   f"--warmup_epochs={min(1, FLAGS.train_epochs - 1)}",
                   f"--batch_size={FLAGS.batch_size}", *steps, *limit, f"--val_limit={FLAGS.eval_examples}",
                   f"--seed={FLAGS.seed}", "--noprogress", f"--out_dir={os.path.join(out, 'train')}"],
                  os.path.join(out, "train", "model_card.json")),
    }
    for mode in ("float32", "int8"):
        tfl = os.path.join(out, "export", f"model-{mode}.tflite")
        cmds[f"export_{mode}"] = (["recipes.export_tflite", f"--model={spec}", f"--weights={weights}", *data,
                                   f"--mode={mode}", f"--check_examples={FLAGS.eval_examples}", f"--output={tfl}",
                                   f"--out_dir={os.path.join(out, 'export')}"], tfl + ".json")
        lat = os.path.join(out, "latency", f"model-{mode}.json")
        cmds[f"latency_{mode}"] = (["recipes.benchmark_latency", f"--model={tfl}", f"--threads={FLAGS.threads}",
                                    f"--runs={FLAGS.runs}", f"--json={lat}"], lat)
    return cmds


def _load(path):
    with open(path) as f:
        return json.load(f)


def _plot(summary: dict, path: str) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.io import atomic_write
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from inputs.classification import validate
    validate(FLAGS.data, FLAGS.data_dir)
    if FLAGS.target_macs <= 0:
        raise UsageError("--target_macs: must be positive")
    out = FLAGS.out_dir
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    cmds = _commands(out)
    seconds = {}
    for i, name in enumerate(STAGES):
        args, done = cmds[name]
        if os.path.exists(done):
            print(f"[{i + 1}/{len(STAGES)}] {name}: done already ({done})", flush=True)
            continue
        print(f"[{i + 1}/{len(STAGES)}] {name}: python -m {' '.join(args)}", flush=True)
        seconds[name] = round(run_stage(name, args, os.path.join(out, "logs", f"{name}.log")), 1)
        print(f"      {seconds[name]:.0f} s", flush=True)

    search = _load(cmds["search"][1])
    card = _load(cmds["train"][1])
    models = {}
    for mode in ("float32", "int8"):
        report, lat = _load(cmds[f"export_{mode}"][1]), _load(cmds[f"latency_{mode}"][1])
        acc = (report.get("parity") or {}).get("accuracy") or {}
        models[mode] = {"tflite": report["tflite"], "bytes": report["file_bytes"], "top1": acc.get("litert"),
                        "keras_top1": acc.get("keras"), "agreement": report["parity"]["top1_agreement"],
                        "max_abs_diff": report["parity"]["max_abs_diff"],
                        "latency": {k: lat[k] for k in ("median_ms", "p10_ms", "p90_ms", "runs", "threads")}}
    summary = {
        "name": search["name"], "data": FLAGS.data, "eval_examples": FLAGS.eval_examples, "threads": FLAGS.threads,
        "search": {k: search[k] for k in ("target_macs", "macs", "params", "expected_macs", "argmax_macs",
                                         "macs_vs_target", "spec")},
        "train": {"epochs": card["epochs"], "steps": card["steps"], "weights_sha256": card["sha256"],
                  **card["metrics"]},
        "models": models, "stage_seconds": seconds,
        "commands": {name: "python -m " + " ".join(args) for name, (args, _) in cmds.items()},
    }
    from common.io import atomic_write
    text = json.dumps(summary, indent=1) + "\n"
    atomic_write(os.path.join(out, "summary.json"), lambda f: f.write(text.encode()))
    _plot(summary, os.path.join(out, "pipeline.png"))

    f32, i8 = models["float32"], models["int8"]
    rows = [("derived model", f"{search['name']}: {search['macs']:,} MACs ({search['macs_vs_target']:+.2%} vs "
                              f"target {FLAGS.target_macs:,.0f}), {search['params']:,} params"),
            ("retrained (Keras)", f"top-1 {card['metrics'].get('val_top1', float('nan')):.3f}"),
            ("TFLite float32", f"top-1 {f32['top1']:.3f}, {f32['bytes'] / 1e3:.0f} kB, "
                               f"{f32['latency']['median_ms']:.3f} ms median"),
            ("TFLite int8", f"top-1 {i8['top1']:.3f}, {i8['bytes'] / 1e3:.0f} kB "
                            f"({f32['bytes'] / i8['bytes']:.2f}× smaller), {i8['latency']['median_ms']:.3f} ms "
                            f"({i8['latency']['median_ms'] / f32['latency']['median_ms']:.2f}× float)")]
    print_rows(rows)
    print(f"outputs: {out}/summary.json, {out}/pipeline.png, {out}/search/kernel_distribution.png")


if __name__ == "__main__":
    run(main)
