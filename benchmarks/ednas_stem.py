"""E-DNAS E2 (issue 18): the depthwise stem swept over k ∈ {3, 5, …, 13} — accuracy vs MACs vs measured latency.

The body is ``cifar_space()``'s every-3×3 network (32×32, MixNet-like, 9.5M MACs). Its stem is replaced by a k×k
**depthwise** conv on the RGB image (``stem.depthwise``: depth multiplier ``--stem_filters`` / 3, stride 1; the
paper's 11×11 stem at CIFAR scale) for every k in ``--kernels``; the reference is the space's own 3×3 full-conv stem
(16 filters). The first block (no expansion) takes the stem's width. Every network is trained from scratch with one
schedule (``recipes.train``), ``--seeds`` seeds, top-1 on the 5,000 CIFAR-10 test images; all are timed together
with LiteRT (one thread, CPU time, interleaved rounds). [Paper: small gains up to a knee near 11×11 at 224; at 32×32
expect the knee earlier.]

    python -m benchmarks.ednas_stem --out benchmarks/results/ednas_stem.json

Resumable: a finished training (its ``model_card.json``) is not rerun.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, litert_latency_ms, round_floats, train_top1, write_json

DATA = "folder:../shared/data/cifar10"


def stem_specs(kernels, filters: int) -> dict:
    """``{"conv3": reference, "dw{k}": depthwise stem k}``: the every-3×3 body of ``cifar_space()``."""
    from models.spec import ModelSpec
    from search.metakernel_space import cifar_space
    base = cifar_space().skeleton(3, name="stem_conv3")
    out = {"conv3": base}
    for k in kernels:
        stages = [list(st) for st in base.stages]
        first = stages[0][0]
        stages[0][0] = dataclasses.replace(first, split=(filters,))  # no expansion: the stem's width
        spec: ModelSpec = dataclasses.replace(
            base, name=f"stem_dw{k}", stem=dataclasses.replace(base.stem, filters=filters, kernel=k, depthwise=True),
            stages=tuple(tuple(st) for st in stages))
        out[f"dw{k}"] = spec
    return out


def plot(rows: dict, path: str) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "macs", "MACs (M)"), (axes[1], "latency_ms", "LiteRT ms (1 thread, CPU time)")):
        for name, r in rows.items():
            if key == "latency_ms" and r.get(key) is None:
                continue
            x = r[key] / 1e6 if key == "macs" else r[key]
            colour = "k" if name == "conv3" else "tab:blue"
            ax.errorbar(x, 100 * r["top1_mean"], yerr=100 * (r["top1_std"] or 0), fmt="o", color=colour, capsize=3)
            # the 3×3 conv stem sits on top of dw 3×3 (same MACs and accuracy): its label goes to the left
            conv = name == "conv3"
            ax.annotate("3×3 conv" if conv else f"dw {name[2:]}×{name[2:]}", (x, 100 * r["top1_mean"]),
                        textcoords="offset points", xytext=(-8, -3) if conv else (5, 4), ha="right" if conv else "left",
                        fontsize=9)
        ax.margins(x=0.18)
        ax.set(xlabel=label, ylabel="top-1 (%)")
        ax.tick_params(labelsize=9)
    axes[0].set_title("depthwise stem k×k vs the 3×3 conv stem: accuracy vs MACs", fontsize=10)
    axes[1].set_title("accuracy vs measured latency", fontsize=10)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--work_dir", default="runs/ednas_stem")
    p.add_argument("--kernels", default="3,5,7,9,11,13")
    p.add_argument("--stem_filters", type=int, default=24, help="depthwise stem width (a multiple of 3)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--train_limit", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--latency_rounds", type=int, default=5)
    a = p.parse_args(argv)
    prog = "ednas_stem"
    try:
        kernels = [int(k) for k in a.kernels.split(",") if k]
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError as e:
        print(f"{prog}: --kernels/--seeds: comma-separated integers ({e})", file=sys.stderr)
        return 2
    if not kernels or any(k < 1 or k % 2 == 0 or k > 31 for k in kernels) or not seeds or a.epochs < 2:
        print(f"{prog}: --kernels odd sizes 1..31, --seeds at least one, --epochs >= 2", file=sys.stderr)
        return 2
    if a.stem_filters < 3 or a.stem_filters % 3:
        print(f"{prog}: --stem_filters={a.stem_filters}: a positive multiple of 3 (depth multiplier on RGB)",
              file=sys.stderr)
        return 2
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        print(f"{prog}: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    from common.io import write_text
    from models import spec as spec_lib
    from models.counting import count
    specs = stem_specs(kernels, a.stem_filters)
    for d in ("logs", "specs"):
        os.makedirs(os.path.join(a.work_dir, d), exist_ok=True)
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"))
    rows, paths, t0 = {}, {}, time.time()
    for name, spec in specs.items():
        path = os.path.join(a.work_dir, "specs", f"{name}.json")
        if not os.path.exists(path):
            write_text(path, spec_lib.dumps(spec))
        paths[name] = path
        c = count(spec)
        top1 = [train_top1(f"{name}_s{seed}", path, os.path.join(a.work_dir, "train", f"{name}_s{seed}"),
                           os.path.join(a.work_dir, "logs", f"{name}_s{seed}.log"), seconds, a.dataset, a.epochs,
                           a.batch_size, a.lr, seed, a.train_limit) for seed in seeds]
        rows[name] = {"stem": "3×3 conv, 16 filters" if name == "conv3" else
                      f"{name[2:]}×{name[2:]} depthwise, {a.stem_filters} filters",
                      "macs": c.macs, "params": c.params, "stem_macs": None, "top1_per_seed": top1,
                      "top1_mean": float(np.mean(top1)), "top1_std": float(np.std(top1, ddof=1)) if len(top1) > 1
                      else None}
    from models.counting import stem_cost
    from models.walk import walk
    for name, spec in specs.items():
        rows[name]["stem_macs"] = stem_cost(walk(spec)).macs
    lat_file = os.path.join(a.work_dir, "latency.json")
    lat = {}
    if os.path.exists(lat_file):
        with open(lat_file) as f:
            lat = json.load(f)
    if set(lat) != set(paths) and a.latency_rounds:
        t1 = time.time()
        lat = litert_latency_ms(specs, a.latency_rounds)
        write_json(lat_file, lat)
        seconds.record("latency", time.time() - t1)
    for name in rows:
        rows[name]["latency_ms"] = lat.get(name)
    ref = rows["conv3"]
    for name, r in rows.items():
        if name != "conv3" and len(seeds) > 1:
            se = float(np.sqrt((r["top1_std"] ** 2 + ref["top1_std"] ** 2) / len(seeds)))
            d = r["top1_mean"] - ref["top1_mean"]
            r["minus_conv3"] = {"diff": d, "se": se, "exceeds_2se": bool(abs(d) > 2 * se)}
    write_json(a.out, round_floats({
        "setup": {"body": "cifar_space() every-3×3 network (search.metakernel_space)", "dataset": a.dataset,
                  "train_limit": a.train_limit or "all", "epochs": a.epochs, "batch_size": a.batch_size,
                  "optimizer": f"SGD momentum 0.9, lr {a.lr}, 1 warm-up epoch, cosine (recipes.train defaults "
                               "otherwise)", "seeds": seeds, "stem_filters": a.stem_filters, "stem_stride": 1,
                  "test_images": 5000, "latency": "LiteRT, 1 thread, CPU time, median, interleaved rounds"},
        "models": rows, "stage_seconds": dict(seconds), "stages_run_now": seconds.ran, "host": host_info(),
        "wall_s": round(time.time() - t0, 1),
        "command": "python -m benchmarks.ednas_stem " + " ".join(sys.argv[1:] if argv is None else argv)}))
    plot(rows, os.path.splitext(a.out)[0] + ".png")
    for name, r in rows.items():
        print(f"{name}: top-1 {r['top1_mean']:.4f}, {r['macs'] / 1e6:.2f}M MACs, "
              f"{r['latency_ms'] if r['latency_ms'] is not None else float('nan'):.3f} ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
