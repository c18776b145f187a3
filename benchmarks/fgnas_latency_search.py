"""FGNAS E3 (issue 17; the paper's Table 4 analogue): the latency regularizer against a width multiplier at the same
measured LiteRT latency, on the MobileNetV2-style CIFAR space.

1. The reference: :func:`search.fgnas_space.mbconv_space` at ``--multiplier`` (default ×0.75; MobileNetV2's width
   multiplier, multiples of 8) is timed with LiteRT (one thread, CPU time); the budget is ``--target_ratio`` × its
   latency (the paper's FGNAS model ran at 0.95× the ×0.75 network's latency).
2. Arms, every one ``--seeds`` seeds, CIFAR-10 (``--train_limit`` training images, 5,000 test images):

   - **W**: the ×multiplier network trained from scratch (``recipes.train``, ``pretrain + search + finetune``
     epochs);
   - **L**: FGNAS with the latency regularizer on the full-width space (``recipes.search_fgnas --space=mbconv
     --resource=latency``, operations {3, 5} × ReLU6 per expanded channel), searched to the budget, fine-tuned;
   - **P**: FGNAS(P), channels only (3×3), the same latency regularizer and budget.

   The latency model is ``--latency_model`` (``python -m benchmarks.fgnas_latency --space=mbconv --kernels=3,5
   --acts=relu6``: per-condition ``a + b · MACs``, calibrated on whole models).
3. Every derived model and the reference are timed together (interleaved rounds): accuracy at measured latency, and
   the latency model's prediction for each FGNAS model against its measurement (the issue's MAPE check).

    python -m benchmarks.fgnas_latency_search --out benchmarks/results/fgnas_latency_search.json

Stages are skipped when their outputs exist, so rerunning resumes.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, litert_latency_ms, round_floats, write_json

DATA = "folder:../shared/data/cifar10"
ARMS = {"L": ("3,5", "FGNAS, latency regularizer, {3×3, 5×5} × ReLU6"),
        "P": ("3", "FGNAS(P), latency regularizer, channels only (3×3)")}
MODEL = os.path.join("benchmarks", "results", "fgnas_latency_model.json")


def _load(path):
    with open(path) as f:
        return json.load(f)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--work_dir", default="runs/fgnas_latency_search")
    p.add_argument("--multiplier", type=float, default=0.75)
    p.add_argument("--target_ratio", type=float, default=1.0, help="budget = ratio × the reference's measured ms")
    p.add_argument("--arms", default="L,P")
    p.add_argument("--seeds", default="0")
    p.add_argument("--latency_model", default=MODEL)
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--train_limit", type=int, default=10000)
    p.add_argument("--pretrain_epochs", type=int, default=2)
    p.add_argument("--search_epochs", type=int, default=6)
    p.add_argument("--finetune_epochs", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--latency_rounds", type=int, default=5)
    a = p.parse_args(argv)
    prog = "fgnas_latency_search"
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError as e:
        print(f"{prog}: --seeds: comma-separated integers ({e})", file=sys.stderr)
        return 2
    arms = [x for x in a.arms.split(",") if x]
    if not seeds or any(x not in ARMS for x in arms):
        print(f"{prog}: --arms: comma-separated of {','.join(ARMS)}; --seeds: at least one", file=sys.stderr)
        return 2
    if not 0 < a.multiplier < 1 or not 0 < a.target_ratio <= 2 or a.latency_rounds < 1:
        print(f"{prog}: --multiplier in (0, 1), --target_ratio in (0, 2], --latency_rounds >= 1", file=sys.stderr)
        return 2
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        print(f"{prog}: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    from search.fgnas_latency import AffineLatency
    try:
        model = AffineLatency.load(a.latency_model)
    except (OSError, ValueError, KeyError) as e:
        print(f"{prog}: --latency_model={a.latency_model}: {e}", file=sys.stderr)
        return 2
    from models import spec as spec_lib
    from models.counting import count
    from recipes.cli import run_stage
    from search.fgnas_space import mbconv_space
    for d in ("logs", "specs"):
        os.makedirs(os.path.join(a.work_dir, d), exist_ok=True)
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"))
    t0 = time.time()
    ref_name = f"W_x{a.multiplier:g}"
    ref_spec = os.path.join(a.work_dir, "specs", f"{ref_name}.json")
    if not os.path.exists(ref_spec):
        with open(ref_spec, "w") as f:
            f.write(spec_lib.dumps(mbconv_space(width_mult=a.multiplier).backbone))
    ref_file = os.path.join(a.work_dir, "reference_latency.json")
    if not os.path.exists(ref_file):
        t1 = time.time()
        write_json(ref_file, litert_latency_ms({ref_name: spec_lib.loads(open(ref_spec, "rb").read())},
                                               a.latency_rounds))
        seconds.record("reference_latency", time.time() - t1)
    target = a.target_ratio * _load(ref_file)[ref_name]
    from workflows.search_fgnas import reachable
    unreachable = {}
    for arm in list(arms):  # an arm whose space cannot reach the budget by the model is reported, not run
        lo, hi = reachable(mbconv_space(tuple(int(k) for k in ARMS[arm][0].split(",")), ("relu6",)), "latency",
                           model)
        if not lo < target < hi:
            unreachable[arm] = {"predicted_ms_range": [lo, hi], "target_ms": target}
            arms.remove(arm)
            print(f"{prog}: arm {arm} skipped: the target {target:.4f} ms is outside its predicted range "
                  f"{lo:.4f} … {hi:.4f} ms", file=sys.stderr)
    epochs = a.pretrain_epochs + a.search_epochs + a.finetune_epochs
    common = [f"--dataset={a.dataset}", f"--batch_size={a.batch_size}", "--noprogress",
              *([f"--limit={a.train_limit}"] if a.train_limit else [])]
    runs: dict[str, list] = {ref_name: [], **{arm: [] for arm in arms}}
    for seed in seeds:
        for name in runs:
            out_dir = os.path.join(a.work_dir, "runs", f"{name}_s{seed}")
            if name == ref_name:
                card = os.path.join(out_dir, "model_card.json")
                args = ["recipes.train", f"--model={ref_spec}", "--weights=", f"--epochs={epochs}", f"--lr={a.lr}",
                        "--nesterov", "--weight_decay=1e-4", "--label_smoothing=0", f"--val_freq={epochs}",
                        f"--seed={seed}", f"--out_dir={out_dir}", *common]
                spec = ref_spec
            else:
                card = os.path.join(out_dir, "finetune", "model_card.json")
                args = ["recipes.search_fgnas", "--space=mbconv", f"--kernels={ARMS[name][0]}", "--acts=relu6",
                        "--resource=latency", f"--latency_model={a.latency_model}", f"--target={target}",
                        f"--pretrain_epochs={a.pretrain_epochs}", f"--search_epochs={a.search_epochs}",
                        f"--finetune_epochs={a.finetune_epochs}", f"--w_lr={a.lr}", "--val_limit=0",
                        f"--seed={seed}", f"--name=fgnas_{name.lower()}", f"--out_dir={out_dir}", *common]
                spec = os.path.join(out_dir, "derived.json")
            if not os.path.exists(card):
                seconds.record(f"{name}_s{seed}", run_stage(name, args, os.path.join(a.work_dir, "logs",
                                                                                    f"{name}_s{seed}.log")))
            run = {"seed": seed, "top1": _load(card)["metrics"]["val_top1"], "spec": spec}
            if name != ref_name:
                s = _load(os.path.join(out_dir, "summary.json"))
                run["search"] = {k: s.get(k) for k in ("reached", "reached_step", "resource_value", "vs_target",
                                                        "macs", "kept_share", "compositional_share")}
            runs[name].append(run)
    lat_file = os.path.join(a.work_dir, "latency.json")
    specs = {f"{n}_s{r['seed']}": r["spec"] for n, rs in runs.items() for r in rs}
    lat = _load(lat_file) if os.path.exists(lat_file) else {}
    if set(lat) != set(specs):
        t1 = time.time()
        lat = litert_latency_ms({k: spec_lib.loads(open(v, "rb").read()) for k, v in specs.items()},
                                a.latency_rounds)
        write_json(lat_file, lat)
        seconds.record("latency", time.time() - t1)
    rows, errors = {}, []
    for name, rs in runs.items():
        top1 = [r["top1"] for r in rs]
        c = count(spec_lib.loads(open(rs[0]["spec"], "rb").read()))
        row = {"arm": f"width multiplier ×{a.multiplier:g}" if name == ref_name else ARMS[name][1],
               "top1_per_seed": top1, "top1_mean": float(np.mean(top1)),
               "top1_std": float(np.std(top1, ddof=1)) if len(top1) > 1 else None,
               "measured_ms": [lat[f"{name}_s{r['seed']}"] for r in rs], "macs": c.macs, "params": c.params}
        if name != ref_name:
            row["search"] = [r["search"] for r in rs]
            row["predicted_ms"] = [r["search"]["resource_value"] for r in rs]
            errors += [(pm - mm) / mm for pm, mm in zip(row["predicted_ms"], row["measured_ms"])]
        row["measured_vs_target"] = [m / target - 1 for m in row["measured_ms"]]
        rows[name] = row
    result = {
        "setup": {"space": "search.fgnas_space.mbconv_space (MobileNetV2-style, 32×32)", "reference": ref_name,
                  "reference_ms": _load(ref_file)[ref_name], "target_ms": target, "target_ratio": a.target_ratio,
                  "latency_model": a.latency_model, "dataset": a.dataset, "train_limit": a.train_limit,
                  "test_images": 5000, "seeds": seeds,
                  "schedule": f"FGNAS {a.pretrain_epochs} pre-train + <= {a.search_epochs} search + "
                              f"{a.finetune_epochs} fine-tune epochs; the reference {epochs} epochs from scratch; "
                              f"SGD Nesterov 0.9, lr {a.lr}, batch {a.batch_size}",
                  "latency": "LiteRT float32, 1 thread, CPU time, median, every model in one process"},
        "models": rows,
        "unreachable_arms": unreachable,
        "latency_model_check": {"models": len(errors), "mape": float(np.mean(np.abs(errors))) if errors else None,
                                "bias": float(np.mean(errors)) if errors else None},
        "stage_seconds": dict(seconds), "stages_run_now": seconds.ran, "host": host_info(),
        "wall_s": round(time.time() - t0, 1),
        "command": "python -m benchmarks.fgnas_latency_search " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_json(a.out, round_floats(result))
    for name, row in rows.items():
        print(f"{name}: top-1 {row['top1_mean']:.4f}, measured {np.mean(row['measured_ms']):.3f} ms "
              f"(target {target:.3f}), {row['macs'] / 1e6:.2f}M MACs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
