"""Detection result on ``../shared/data/raccoon``: YOLOv3 head on the Lite0 backbone, ImageNet weights vs scratch.

Both runs use the same schedule through ``recipes.finetune_yolo`` (a subprocess each, log under ``--work_dir``); the
ImageNet run keeps its backbone frozen for ``--freeze_epochs`` first (a frozen random backbone would be pointless).
A run whose ``summary.json`` exists is not repeated, and an interrupted run resumes from its checkpoint.

    python -m benchmarks.detection_raccoon --out benchmarks/results/detection_raccoon.json
    python -m benchmarks.detection_raccoon --backbone=metakernel_a --weights=lite0_distilled --runs=pretrained \
        --work_dir=runs/detection_raccoon_metakernel_a --out benchmarks/results/detection_raccoon_metakernel_a.json

``--weights`` names the pretrained run's backbone weights (a zoo tag of ``--backbone`` or a .npz path), so a searched
backbone transfers under the very schedule Lite0's ``imagenet`` run used; ``--runs`` picks the runs.

Writes the JSON (mAP@0.5 VOC07 / AUC and COCO AP for both, per-epoch val curves, minutes, TFLite parity, the exact
commands, host) and, next to it, ``<stem>_curves.png`` (val mAP per epoch, both runs) and ``<stem>_predictions.png``
(the ImageNet run's predictions on val images). 40 val images: epoch-to-epoch swings of ±0.1 mAP are common.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, write_json

DATA = "voc:../shared/data/raccoon"


def _load(path):
    with open(path) as f:
        return json.load(f)


def plot_curves(histories: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for tag, hist in histories.items():
        ax.plot([h["epoch"] for h in hist], [h["val_map50_voc07"] for h in hist], marker="o", ms=3, label=tag)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mAP@0.5 (VOC07 11-point)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--work_dir", default="runs/detection_raccoon", help="run outputs and logs")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--freeze_epochs", type=int, default=3, help="pretrained run only")
    p.add_argument("--weights", default="imagenet", help="the pretrained run's backbone weights: a zoo tag or .npz")
    p.add_argument("--runs", default="pretrained,scratch", help="comma-separated: pretrained, scratch")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run, not a result)")
    a = p.parse_args(argv)
    if a.dataset.startswith("voc:") and not os.path.isdir(a.dataset[4:]):
        print(f"detection_raccoon: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    a.runs = [r for r in a.runs.split(",") if r]
    if not a.runs or set(a.runs) - {"pretrained", "scratch"}:
        print(f"detection_raccoon: --runs={','.join(a.runs)}: pretrained and/or scratch", file=sys.stderr)
        return 2
    if not a.weights:
        print("detection_raccoon: --weights: a zoo tag or a .npz path for the pretrained run", file=sys.stderr)
        return 2
    from recipes.cli import run_stage

    quick = ["--limit=16", "--val_limit=8", "--bn_recal_batches=2"] if a.quick else []
    common = [f"--backbone={a.backbone}", f"--dataset={a.dataset}", f"--input_size={a.input_size}",
              f"--epochs={a.epochs}", f"--batch_size={a.batch_size}", f"--lr={a.lr}", "--export=float32",
              "--noprogress", *quick]
    runs = {"pretrained": [f"--weights={a.weights}", f"--freeze_epochs={a.freeze_epochs}"],
            "scratch": ["--weights=", "--freeze_epochs=0"]}
    runs = {k: v for k, v in runs.items() if k in a.runs}
    os.makedirs(os.path.join(a.work_dir, "logs"), exist_ok=True)
    commands, stage_seconds, summaries, histories = {}, {}, {}, {}
    for tag, extra in runs.items():
        out_dir = os.path.join(a.work_dir, tag)
        args = ["recipes.finetune_yolo", *common, *extra, f"--out_dir={out_dir}"]
        commands[tag] = "python -m " + " ".join(args)
        done = os.path.join(out_dir, "summary.json")
        if not os.path.exists(done):
            stage_seconds[tag] = round(run_stage(tag, args, os.path.join(a.work_dir, "logs", f"{tag}.log")))
        summaries[tag] = _load(done)
        histories[tag] = _load(os.path.join(out_dir, "history.json"))

    stem = os.path.splitext(a.out)[0]
    plot_curves(histories, stem + "_curves.png",
                f"{a.backbone} + YOLOv3 head, {a.dataset} at {a.input_size}\n"
                + " vs ".join({"pretrained": f"'{a.weights}' weights", "scratch": "scratch"}[r] for r in a.runs)
                + f", {a.epochs} epochs")
    first = a.runs[0]
    shutil.copyfile(os.path.join(a.work_dir, first, "predictions.png"), stem + "_predictions.png")
    s_pre = summaries[first]
    result = {
        "task": f"YOLOv3-style detector (models/yolo.py head) on {a.backbone}, {a.dataset}, "
                + " vs ".join({"pretrained": f"pretrained ('{a.weights}')", "scratch": "scratch"}[r] for r in a.runs)
                + " backbone, same schedule; metrics on the val images in original pixels, last-epoch weights",
        "backbone": a.backbone, "weights": a.weights,
        "dataset": a.dataset, "train_images": s_pre["train_images"], "val_images": s_pre["val_images"],
        "quick": a.quick,
        "epochs": a.epochs, "input_size": a.input_size, "batch_size": a.batch_size,
        "freeze_epochs_pretrained": a.freeze_epochs, "freeze_epochs_scratch": 0,
        "schedule": {k: s_pre["settings"][k] for k in ("optimizer", "lr", "lr_steps", "warmup_epochs",
                                                       "weight_decay", "anchors", "box_loss", "head_width", "seed",
                                                       "bn_recal_batches")},
        "train_minutes": s_pre["train_minutes"],
        "anchors": s_pre["anchors"],
        "host": host_info(),
        "commands": commands,
        "command": "python -m benchmarks.detection_raccoon " + " ".join(sys.argv[1:] if argv is None else argv),
        "stage_seconds": stage_seconds,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for tag, s in summaries.items():
        result.update({
            f"map50_voc07_{tag}": s["map50_voc07"], f"map50_auc_{tag}": s["map50_auc"],
            f"ap_coco_{tag}": s["coco_ap"], f"ap50_coco_{tag}": s["coco_ap50"], f"ap75_coco_{tag}": s["coco_ap75"],
            f"best_epoch_map50_voc07_{tag}": [s["best_epoch"], s["best_map50_voc07"]],
            f"val_map50_voc07_per_epoch_{tag}": [h["val_map50_voc07"] for h in histories[tag]],
            f"train_loss_per_epoch_{tag}": [h["train_loss"] for h in histories[tag]],
            f"train_minutes_{tag}": s["train_minutes"], f"command_minutes_{tag}": s["command_minutes"],
            f"tflite_parity_max_abs_{tag}": (s["export"] or {}).get("float32", {}).get("parity_max_abs"),
        })
    write_json(a.out, round_floats(result))
    print(json.dumps({f"{k}_{r}": result[f"{k}_{r}"] for r in a.runs
                      for k in ("map50_voc07", "ap50_coco", "train_minutes")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
