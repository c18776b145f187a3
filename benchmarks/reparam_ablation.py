"""E-DNAS E4 (issue 18): additive kernel merging (Eq. 1–2) against training the merged-size kernel directly.

For each kernel size k in ``--kernels``, one spec — the kernel-size ablation's baseline A (every depthwise conv k×k,
``ablation_space(expand=3)`` widened to ``--target`` MACs, the same networks as ``benchmarks.kernel_ablation``) — is
trained twice per seed with one schedule: **direct** (``recipes.train``) and **merged** (``recipes.train
--reparam=…``: every depthwise conv trained as parallel kernels of the odd sizes ≤ k among ``--branches``, each with
its BN, summed, then merged into the one k×k kernel). Both deploy the same network (same spec, ops, MACs, latency);
only the training differs. Top-1 on the 5,000 CIFAR-10 test images, mean ± std over ``--seeds``, the difference and
its standard error.

    python -m benchmarks.reparam_ablation --out benchmarks/results/reparam_ablation.json
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, train_top1, write_json

DATA = "folder:../shared/data/cifar10"


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--work_dir", default="runs/reparam_ablation")
    p.add_argument("--kernels", default="7", help="deployed kernel sizes (comma-separated odd sizes)")
    p.add_argument("--branches", default="1,3,5,7", help="parallel kernel sizes of the merged form")
    p.add_argument("--target", type=float, default=None, help="MACs (default: the kernel ablation's, 7×7 at "
                                                               "expansion 3)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--train_limit", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    a = p.parse_args(argv)
    try:
        kernels = [int(k) for k in a.kernels.split(",") if k]
        branches = [int(k) for k in a.branches.split(",") if k]
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError as e:
        print(f"reparam_ablation: --kernels/--branches/--seeds: comma-separated integers ({e})", file=sys.stderr)
        return 2
    if (not kernels or not seeds or any(k < 3 or k % 2 == 0 for k in kernels)
            or any(b < 1 or b % 2 == 0 for b in branches) or a.epochs < 2):
        print("reparam_ablation: --kernels odd sizes >= 3, --branches odd sizes, --seeds at least one, --epochs >= 2",
              file=sys.stderr)
        return 2
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        print(f"reparam_ablation: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    from common.io import write_text
    from models import spec as spec_lib
    from models.counting import count
    from search.metakernel_space import ablation_space

    space = ablation_space(expand=3)
    target = a.target or float(count(space.mixed((7,))).macs)
    os.makedirs(os.path.join(a.work_dir, "logs"), exist_ok=True)
    os.makedirs(os.path.join(a.work_dir, "specs"), exist_ok=True)
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"))
    rows, t0 = {}, time.time()
    for k in kernels:
        spec_file = os.path.join(a.work_dir, "specs", f"A_k{k}.json")
        if not os.path.exists(spec_file):
            write_text(spec_file, spec_lib.dumps(space.matched((k,), "uniform", target, name=f"a_k{k}")[0]))
        rep = ",".join(str(b) for b in sorted({b for b in branches if b <= k} | {k}))
        c = count(spec_lib.loads(open(spec_file, "rb").read()))
        row = {"kernel": k, "branches": [int(b) for b in rep.split(",")], "macs": c.macs, "params": c.params}
        for form in ("direct", "merged"):
            top1 = []
            for seed in seeds:
                name = f"A_k{k}_{form}_s{seed}"
                top1.append(train_top1(name, spec_file, os.path.join(a.work_dir, "train", name),
                                       os.path.join(a.work_dir, "logs", f"{name}.log"), seconds, a.dataset, a.epochs,
                                       a.batch_size, a.lr, seed, a.train_limit,
                                       [f"--reparam={rep}"] if form == "merged" else []))
            row[form] = {"top1_per_seed": top1, "top1_mean": float(np.mean(top1)),
                         "top1_std": float(np.std(top1, ddof=1)) if len(top1) > 1 else None}
        d, m = row["direct"], row["merged"]
        if len(seeds) > 1:
            se = math.sqrt((d["top1_std"] ** 2 + m["top1_std"] ** 2) / len(seeds))
            diff = m["top1_mean"] - d["top1_mean"]
            row["merged_minus_direct"] = {"diff": diff, "se": se, "exceeds_2se": bool(abs(diff) > 2 * se)}
        rows[f"A_k{k}"] = row
        write_json(a.out, round_floats({
            "setup": {"dataset": a.dataset, "train_limit": a.train_limit or "all", "epochs": a.epochs,
                      "batch_size": a.batch_size, "optimizer": f"SGD momentum 0.9, lr {a.lr}, 1 warm-up epoch, "
                      "cosine (recipes.train defaults otherwise)", "seeds": seeds, "target_macs": target,
                      "test_images": 5000, "deployed": "the same spec for both forms (identical graph, MACs and "
                      "latency); merged weights fold the parallel kernels and BNs (search.reparam.merge)"},
            "models": rows, "stage_seconds": dict(seconds), "stages_run_now": seconds.ran, "host": host_info(),
            "command": "python -m benchmarks.reparam_ablation " + " ".join(sys.argv[1:] if argv is None else argv)}))
    print(f"{time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
