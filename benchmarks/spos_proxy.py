"""SPOS proxy experiment on ``../shared/data/cifar10_subset`` (the paper's Table 3 shape, at CPU scale).

Per seed: train the supernet (block search: choice_3/5/7/x, constraint sampling) → evolutionary search and random
search on the same budget, both under a MACs limit equal to the "all choice_3" network's MACs → retrain from scratch
(a) the best evolved architecture and (b) all choice_3, same schedule → top-1 on the 500 test images.

    python -m benchmarks.spos_proxy --out benchmarks/results/spos_proxy.json [--seeds=0,1] [--quick]

Every stage is a recipe run in a subprocess (logs under ``--work_dir``); a stage whose output exists is skipped, so a
rerun resumes. 500 test images: a difference under ~2 points is noise (shared/data/README.md); the JSON reports
per-seed numbers, their means and the spread.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, write_json

DATA = "folder:../shared/data/cifar10_subset"


def _load(path):
    with open(path) as f:
        return json.load(f)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--work_dir", default="runs/spos_proxy", help="run outputs and logs")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    p.add_argument("--depth", default="2,2,4,2")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--supernet_epochs", type=int, default=8)
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument("--train_epochs", type=int, default=8)
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run, not a result)")
    a = p.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        print(f"spos_proxy: --seeds={a.seeds}: comma-separated integers", file=sys.stderr)
        return 2
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        print(f"spos_proxy: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    from common.io import atomic_write
    from models import spec as spec_lib
    from recipes.cli import run_stage
    from search import spos as sp

    depth = tuple(int(d) for d in a.depth.split(","))
    space = sp.cifar_space(a.width, depth, 10)
    choice3 = np.zeros((space.n_blocks, 3), np.int32)
    limit = sp.cost(space, choice3)["macs"]
    extra = ["--limit=512", "--steps_per_epoch=4"] if a.quick else []
    os.makedirs(a.work_dir, exist_ok=True)
    c3_spec = os.path.join(a.work_dir, "all_choice3.json")
    text = spec_lib.dumps(sp.arch_spec(space, choice3, "spos_all_choice3"))
    atomic_write(c3_spec, lambda f: f.write(text.encode()))
    per_seed, seconds = [], {}
    t_all = time.time()
    for seed in seeds:
        root = os.path.join(a.work_dir, f"seed{seed}")
        os.makedirs(os.path.join(root, "logs"), exist_ok=True)
        search_dir = os.path.join(root, "search")
        stages = [
            ("search", ["recipes.search_spos", f"--dataset={a.dataset}", "--phase=both", f"--width={a.width}",
                        f"--depth={a.depth}", f"--epochs={a.supernet_epochs}", f"--max_macs={limit}",
                        f"--population={a.population}", f"--iterations={a.iterations}", f"--top_k={a.top_k}",
                        f"--seed={seed}", "--noprogress", f"--out_dir={search_dir}",
                        *(["--recal_images=128", "--val_images=128"] if a.quick else []), *extra],
             os.path.join(search_dir, "summary.json")),
        ]
        for tag, spec in (("searched", os.path.join(search_dir, "derived.json")), ("choice3", c3_spec)):
            stages.append((f"train_{tag}", ["recipes.train", f"--model={spec}", "--weights=", f"--dataset={a.dataset}",
                                            f"--epochs={1 if a.quick else a.train_epochs}", "--optimizer=sgd",
                                            "--lr=0.1", f"--warmup_epochs={0 if a.quick else 1}", "--batch_size=64",
                                            f"--seed={seed}",
                                            "--noprogress", f"--out_dir={os.path.join(root, 'train_' + tag)}",
                                            *extra],
                           os.path.join(root, f"train_{tag}", "model_card.json")))
        for name, args, done in stages:
            if not os.path.exists(done):
                seconds[f"seed{seed}/{name}"] = round(run_stage(name, args, os.path.join(root, "logs", f"{name}.log")))
        s = _load(os.path.join(search_dir, "summary.json"))
        cards = {t: _load(os.path.join(root, f"train_{t}", "model_card.json")) for t in ("searched", "choice3")}
        per_seed.append({
            "seed": seed, "searched_arch": s["best"], "searched_macs": s["best_cost"]["macs"],
            "searched_params": s["best_cost"]["params"], "choice3_macs": limit,
            "evolution_best_supernet_acc": s["evolution"]["evolution"]["best_acc"],
            "random_best_supernet_acc": s["evolution"]["random"]["best_acc"],
            "evolution_evaluated": s["evolution"]["evolution"]["evaluated"],
            "random_evaluated": s["evolution"]["random"]["evaluated"],
            "searched_top1": cards["searched"]["metrics"]["val_top1"],
            "choice3_top1": cards["choice3"]["metrics"]["val_top1"],
            "evolution_history": s["evolution"]["evolution"]["history"],
            "random_history": s["evolution"]["random"]["history"]})

    def stats(key):
        v = np.array([r[key] for r in per_seed], float)
        return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": len(v)}
    result = {
        "setup": {"dataset": a.dataset, "space": space.to_json(), "macs_limit": limit,
                  "supernet_epochs": a.supernet_epochs, "population": a.population, "iterations": a.iterations,
                  "top_k": a.top_k, "retrain_epochs": a.train_epochs, "test_images": 500, "quick": a.quick,
                  "note": "supernet accuracies are on the held-out 20% of the training images after BN "
                          "recalibration; top-1 after retraining from scratch is on the 500 test images, where "
                          "differences under ~2 points are noise"},
        "per_seed": per_seed,
        "searched_top1": stats("searched_top1"), "choice3_top1": stats("choice3_top1"),
        "evolution_best_supernet_acc": stats("evolution_best_supernet_acc"),
        "random_best_supernet_acc": stats("random_best_supernet_acc"),
        "searched_macs": stats("searched_macs"),
        "stage_seconds": seconds, "total_seconds": round(time.time() - t_all), "host": host_info(),
        "command": "python -m benchmarks.spos_proxy " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    write_json(a.out, round_floats(result))
    print(json.dumps({k: result[k] for k in ("searched_top1", "choice3_top1", "evolution_best_supernet_acc",
                                             "random_best_supernet_acc")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
