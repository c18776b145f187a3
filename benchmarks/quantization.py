"""Float vs post-training int8 vs quantization-aware-trained int8 TFLite: accuracy, file size and 1-thread latency.

    python -m benchmarks.quantization --out benchmarks/results/quantization.json

Runs the recipes a user would run, as subprocesses, under ``--work_dir`` (logs in ``logs/``):
1. ``recipes.train`` — a zoo model (default ``efficientnet_lite0`` from its ImageNet weights, the classifier replaced)
   fine-tuned on ``--dataset`` (default ``folder:../shared/data/cifar10_subset``) at ``--input_size``;
2. ``recipes.export_tflite --mode=float32`` and ``--mode=int8`` (post-training quantization, calibrated on training
   images) — accuracy on the test split from the LiteRT interpreter;
3. ``recipes.qat`` — tf_keras twin + tfmot QAT fine-tuning from the trained weights, exported to int8;
4. ``recipes.benchmark_latency`` on the three files (1 thread, interleaved ``--rounds`` times, medians).
Stages whose output exists are skipped, so a rerun resumes. Writes the JSON atomically and a bar-chart PNG beside it.
"""
from __future__ import annotations

import json
import os
import statistics
import sys

from absl import flags

from recipes.cli import UsageError, run, run_stage

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Result JSON path (a PNG is written beside it).")
flags.DEFINE_string("work_dir", "runs/quantization", "Where the trained weights, .tflite files and logs go.")
flags.DEFINE_string("model", "efficientnet_lite0", "Zoo model name or spec path.")
flags.DEFINE_string("weights", "imagenet", "Initial weights of the float training (zoo tag, .npz, or '').")
flags.DEFINE_string("dataset", "folder:../shared/data/cifar10_subset", "Dataset (inputs.classification forms).")
flags.DEFINE_integer("input_size", 64, "Input size of training, export and latency.", lower_bound=16)
flags.DEFINE_integer("epochs", 8, "Float training epochs.", lower_bound=1)
flags.DEFINE_integer("qat_epochs", 2, "QAT fine-tuning epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
flags.DEFINE_float("lr", 0.02, "Peak learning rate of the float training.", lower_bound=0.0)
flags.DEFINE_float("qat_lr", 1e-5, "Learning rate of QAT fine-tuning (recipes.qat default optimizer).",
                   lower_bound=0.0)
flags.DEFINE_integer("limit", None, "Training examples (default: all).", lower_bound=2)
flags.DEFINE_integer("test_examples", 500, "Test examples for every accuracy.", lower_bound=1)
flags.DEFINE_integer("runs", 200, "Timed LiteRT runs per latency round.", lower_bound=1)
flags.DEFINE_integer("rounds", 3, "Interleaved latency rounds per file.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of training and QAT.")
flags.mark_flag_as_required("out")


def _run(name, args, work):
    secs = run_stage(name, args, os.path.join(work, "logs", f"{name}.log"))
    print(f"{name}: {secs:.0f} s", file=sys.stderr, flush=True)


def _load(path):
    with open(path) as f:
        return json.load(f)


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from inputs.classification import validate
    validate(FLAGS.dataset)
    work = FLAGS.work_dir
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    data = [f"--dataset={FLAGS.dataset}", f"--input_size={FLAGS.input_size}"]
    limit = [f"--limit={FLAGS.limit}"] if FLAGS.limit else []
    train_dir, weights = os.path.join(work, "train"), os.path.join(work, "train", "weights.npz")
    files = {m: os.path.join(work, f"{m}.tflite") for m in ("float32", "ptq_int8", "qat_int8")}
    stages = [
        ("train", ["recipes.train", f"--model={FLAGS.model}", f"--weights={FLAGS.weights}", *data, *limit,
                   f"--epochs={FLAGS.epochs}", f"--batch_size={FLAGS.batch_size}", f"--lr={FLAGS.lr}",
                   f"--val_limit={FLAGS.test_examples}", f"--seed={FLAGS.seed}", "--noprogress",
                   f"--out_dir={train_dir}"], os.path.join(train_dir, "model_card.json")),
    ]
    card_classes = None
    for mode, key in (("float32", "float32"), ("int8", "ptq_int8")):
        stages.append((f"export_{key}", ["recipes.export_tflite", f"--model={FLAGS.model}", f"--weights={weights}",
                                         *data, f"--mode={mode}", f"--check_examples={FLAGS.test_examples}",
                                         f"--output={files[key]}", f"--out_dir={work}"], files[key] + ".json"))
    qat_dir = os.path.join(work, "qat")
    stages.append(("qat", ["recipes.qat", f"--model={FLAGS.model}", f"--weights={weights}", *data, *limit,
                           f"--epochs={FLAGS.qat_epochs}", f"--batch_size={FLAGS.batch_size}", f"--lr={FLAGS.qat_lr}",
                           f"--val_limit={FLAGS.test_examples}", f"--seed={FLAGS.seed}", f"--out_dir={qat_dir}",
                           f"--output={files['qat_int8']}"], os.path.join(qat_dir, "qat_report.json")))
    for name, args, done in stages:
        if name.startswith(("export", "qat")) and card_classes is None:
            card_classes = _load(stages[0][2])["classes"]
        if name.startswith(("export", "qat")):
            args = [*args, f"--classes={card_classes}"]
        if not os.path.exists(done):
            _run(name, args, work)

    latency = {k: [] for k in files}
    for r in range(FLAGS.rounds):  # interleaved rounds: host noise hits every file alike
        for key, path in files.items():
            out = os.path.join(work, f"latency_{key}_r{r}.json")
            if not os.path.exists(out):
                _run(f"latency_{key}_r{r}", ["recipes.benchmark_latency", f"--model={path}", "--threads=1",
                                             f"--runs={FLAGS.runs}", f"--json={out}"], work)
            latency[key].append(_load(out)["median_ms"])

    card = _load(stages[0][2])
    reports = {k: _load(files[k] + ".json") for k in ("float32", "ptq_int8")}
    qat = _load(os.path.join(qat_dir, "qat_report.json"))
    acc = {k: reports[k]["parity"]["accuracy"]["litert"] for k in reports}
    acc["qat_int8"] = qat["int8_top1"]
    size = {k: os.path.getsize(p) for k, p in files.items()}
    ms = {k: statistics.median(v) for k, v in latency.items()}
    result = {
        "float_acc": acc["float32"], "ptq_int8_acc": acc["ptq_int8"], "qat_int8_acc": acc["qat_int8"],
        "keras_acc": card["metrics"].get("val_top1"),
        "float_bytes": size["float32"], "int8_bytes": size["qat_int8"], "ptq_int8_bytes": size["ptq_int8"],
        "float_ms": ms["float32"], "int8_ms": ms["qat_int8"], "ptq_int8_ms": ms["ptq_int8"],
        "qat_drop_points": 100 * (acc["float32"] - acc["qat_int8"]),
        "ptq_drop_points": 100 * (acc["float32"] - acc["ptq_int8"]),
        "size_ratio": size["float32"] / size["qat_int8"], "latency_ratio": ms["qat_int8"] / ms["float32"],
        "latency_rounds_ms": latency, "test_examples": FLAGS.test_examples,
        "targets": {"qat_drop_points": "<= 0.5", "size_ratio": ">= 3.8", "latency_ratio": "<= 0.75"},
        "model": FLAGS.model, "initial_weights": FLAGS.weights, "dataset": FLAGS.dataset,
        "input_size": FLAGS.input_size, "train": {"epochs": card["epochs"], "steps": card["steps"],
                                                  "batch_size": card["batch_size"], "seed": card["seed"],
                                                  "sha256": card["sha256"]},
        "qat": {k: qat.get(k) for k in ("epochs", "steps", "twin_max_abs_diff", "qat_top1_before_finetune",
                                        "qat_top1", "int8_top1", "settings")},
        "ops": {"float32": reports["float32"]["ops"], "ptq_int8": reports["ptq_int8"]["ops"]},
        "host": _load(os.path.join(work, "latency_float32_r0.json")).get("host"),
        "command": "python -m benchmarks.quantization " + " ".join(sys.argv[1:]),
        "stage_logs": os.path.join(work, "logs"),
    }
    from common.io import write_json
    write_json(FLAGS.out, result)
    _plot(result, os.path.splitext(FLAGS.out)[0] + ".png")
    print(f"top-1 float {acc['float32']:.3f}, PTQ int8 {acc['ptq_int8']:.3f}, QAT int8 {acc['qat_int8']:.3f}; "
          f"size {result['size_ratio']:.2f}× smaller; int8/float latency {result['latency_ratio']:.2f}")


def _plot(result, path):
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    names = ["float32", "PTQ int8", "QAT int8"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    axes[0].bar(names, [result["float_acc"], result["ptq_int8_acc"], result["qat_int8_acc"]], color="tab:green")
    axes[0].set_title(f"top-1 ({result['test_examples']} test images)")
    axes[1].bar(names, [result["float_bytes"] / 1e6, result["ptq_int8_bytes"] / 1e6, result["int8_bytes"] / 1e6],
                color="tab:orange")
    axes[1].set_title("TFLite size (MB)")
    axes[2].bar(names, [result["float_ms"], result["ptq_int8_ms"], result["int8_ms"]], color="tab:purple")
    axes[2].set_title("LiteRT latency, 1 thread (ms)")
    fig.suptitle(f"{result['model']} on {result['dataset']} at {result['input_size']}×{result['input_size']}")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    run(main)
