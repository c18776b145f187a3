"""FGNAS E1 (issue 17; the paper's Table 5 / Fig. 5) at CPU scale: search-space ablation on the VGG-style backbone.

Models (CIFAR-10, ``../shared/data/cifar10``; every training on ``--train_limit`` training images, every score on the
5,000 test images, which never select anything):

- **backbone**: :func:`search.fgnas_space.vgg_space` (width ``--width``, 3×3 convs, ReLU), trained from scratch;
- **W** (uniform width): the same backbone at the width whose MACs are nearest each target, trained from scratch;
- **P** (FGNAS(P), channel pruning only): operations {3×3/ReLU};
- **K** (+ kernel choice): {1, 3, 5} × ReLU;
- **KA** (+ activation choice): {1, 3, 5} × {ReLU, PReLU, tanh} (the paper's Table 2 activations);

and E2 (the paper's Table 7 gating ablation, ``--variants=KA,M,O``):

- **M**: KA's operations, several per channel but no pruning (``--gating=no_prune``);
- **O**: KA's operations, pruning with one operation per channel (``--gating=one_op``);

each FGNAS variant searched (``recipes.search_fgnas``: ``--pretrain_epochs`` with every gate on, then weights and
gates until the derived model's MACs are at or below the target, at most ``--search_epochs``) and fine-tuned
(``--finetune_epochs``) for every target (``--fractions`` of the backbone's MACs) and seed. Baselines train for
``pretrain + search + finetune`` epochs, at least as many as any FGNAS run spends on weights. Same optimizer for every
training (SGD, Nesterov momentum 0.9, lr ``--lr``, 1 warm-up epoch then cosine, weight decay 1e-4, no label
smoothing). The JSON has per model: MACs, params, top-1 per seed with mean ± std (or the binomial standard error of
one seed), and for searches the step the target was reached and the kept / compositional channel shares; the PNG plots
top-1 against MACs. Stages are skipped when their outputs exist, so rerunning resumes; each finished stage's card,
search summary and derived spec are mirrored into ``--ledger`` (committed), so a later session resumes too.

    python -m benchmarks.fgnas_ablation --out benchmarks/results/fgnas_ablation.json
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, write_json

DATA = "folder:../shared/data/cifar10"
LEDGER = os.path.join("benchmarks", "results", "fgnas_ablation_runs")
SEARCH_FILES = ["finetune/model_card.json", "summary.json", "derived.json"]  # the card (completion) lands last
VARIANTS = {"P": ("3", "relu", "full"), "K": ("1,3,5", "relu", "full"), "KA": ("1,3,5", "relu,prelu,tanh", "full"),
            "M": ("1,3,5", "relu,prelu,tanh", "no_prune"), "O": ("1,3,5", "relu,prelu,tanh", "one_op")}
TEST_IMAGES = 5000
# PSI_LR: the per-gate gradient of λ·R/R₀ sums to about 2λ over all gates, so it shrinks as 1/(M · channels); a
# variant with M operations gets M × --psi_lr so that its average gate needs as many steps to flip as FGNAS(P)'s.
# Measured first with the recipe's tiny-data default (10, every variant): FGNAS(P) at half the MACs reached its target
# 24 steps into the gate phase, pruning the 32×32 and 16×16 layers (whose channels carry the largest MACs gradient)
# to a third before the cross-entropy could respond, and fine-tuned to 61.7% against 68.9% for the uniform-width net
# of the same MACs. At 1 × M (benchmarks/results/fgnas_ablation_lr1.json) it took 120 steps and fine-tuned to 64.0%
# against the uniform-width net's 68.9%, still pruning the first layers hardest (12 → 4, 24 → 10 channels). The
# default, 0.2 × M, gives the cross-entropy five times longer to defend channels; history.json records the steps.


def _load(path):
    with open(path) as f:
        return json.load(f)


def _width_for(target: float, width: int) -> int:
    """The VGG width whose backbone MACs are nearest ``target``."""
    from models.counting import count
    from search.fgnas_space import vgg_space
    return min(range(1, 4 * width + 1), key=lambda w: abs(count(vgg_space(w).backbone).macs - target))


def gate_lr(a, kernels: str, acts: str) -> float:
    """``--psi_lr``, × the number of operations with ``--normalize=supernet`` (see PSI_LR)."""
    m = len(kernels.split(",")) * len(acts.split(",")) if a.normalize == "supernet" else 1
    return a.psi_lr * m


def plot(rows: dict, path: str, title: str) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {"backbone": ("black", "*"), "W": ("grey", "s"), "P": ("tab:blue", "o"), "K": ("tab:orange", "^"),
              "KA": ("tab:green", "D"), "M": ("tab:purple", "v"), "O": ("tab:brown", "<")}
    labels = {"backbone": "backbone", "W": "uniform width", "P": "FGNAS(P): channels", "K": "+ kernels 1/3/5",
              "KA": "+ ReLU/PReLU/tanh", "M": "KA ops, no pruning", "O": "KA ops, one per channel"}
    for group, (colour, marker) in styles.items():
        pts = sorted((r["macs"], r["top1_mean"], r.get("top1_err") or 0.0) for r in rows.values()
                     if r["group"] == group and "top1_mean" in r)
        if pts:
            x, y, e = (np.array(v) for v in zip(*pts))
            ax.errorbar(x / 1e6, 100 * y, yerr=100 * e, color=colour, marker=marker, capsize=3,
                        linestyle="none" if group == "backbone" else "-", label=labels[group])
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("top-1 on 5,000 CIFAR-10 test images (%; bars: 1 SE)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path (a PNG is written beside it)")
    p.add_argument("--work_dir", default="runs/fgnas_ablation")
    p.add_argument("--variants", default="P,K,KA", help=f"comma-separated, of {','.join(VARIANTS)}")
    p.add_argument("--fractions", default="0.5,0.25", help="targets as fractions of the backbone's MACs")
    p.add_argument("--width", type=int, default=12, help="VGG backbone width")
    p.add_argument("--seeds", default="0")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--train_limit", type=int, default=10000, help="training images (0: all 50,000)")
    p.add_argument("--pretrain_epochs", type=int, default=2)
    p.add_argument("--search_epochs", type=int, default=6)
    p.add_argument("--finetune_epochs", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--psi_lr", type=float, default=None,
                   help="gate learning rate (default: the recipe's; with --normalize=supernet a variant with M "
                        "operations uses M × this, see PSI_LR)")
    p.add_argument("--normalize", default="target", choices=["target", "supernet"],
                   help="R₀ of the recipe's λ·R/R₀ (the earlier runs: supernet)")
    p.add_argument("--latency_rounds", type=int, default=5, help="interleaved LiteRT timing rounds (0: skip)")
    p.add_argument("--no_refill", action="store_true",
                   help="stop every search exactly at the paper's rule (recipes.search_fgnas --norefill); by default "
                        "the stopping step is followed by the refill of what fits under the target")
    p.add_argument("--ledger", default=LEDGER,
                   help="folder (committed beside the JSON) mirroring each finished stage's card / summary / derived "
                        "spec, so a later session whose --work_dir is gone resumes; '' for none. Refuses a ledger "
                        "of other settings")
    a = p.parse_args(argv)
    try:
        variants = [v for v in a.variants.split(",") if v]
        fractions = [float(f) for f in a.fractions.split(",") if f]
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError as e:
        print(f"fgnas_ablation: --fractions/--seeds: comma-separated numbers ({e})", file=sys.stderr)
        return 2
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not seeds or any(not 0 < f < 1 for f in fractions) or a.width < 2:
        print(f"fgnas_ablation: --variants of {','.join(VARIANTS)} (got {a.variants}), --fractions in (0, 1), "
              "--seeds at least one, --width >= 2", file=sys.stderr)
        return 2
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        print(f"fgnas_ablation: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    from benchmarks.kernel_ablation import measure_latency
    from models import spec as spec_lib
    from models.counting import count
    from recipes.cli import run_stage
    from search.fgnas_space import vgg_space

    backbone = vgg_space(a.width).backbone
    full = count(backbone).macs
    epochs = a.pretrain_epochs + a.search_epochs + a.finetune_epochs
    spec_dir, logs = os.path.join(a.work_dir, "specs"), os.path.join(a.work_dir, "logs")
    os.makedirs(spec_dir, exist_ok=True)
    os.makedirs(logs, exist_ok=True)
    models = {"backbone": {"group": "backbone", "spec": os.path.join(spec_dir, "backbone.json"), "width": a.width}}
    for f in fractions:
        w = _width_for(f * full, a.width)
        models[f"W_w{w}"] = {"group": "W", "spec": os.path.join(spec_dir, f"W_w{w}.json"), "width": w}
        for v in variants:
            models[f"{v}_f{f:g}"] = {"group": v, "fraction": f, "target": round(f * full)}
    for m in models.values():
        if "spec" in m and not os.path.exists(m["spec"]):
            spec = vgg_space(m["width"]).backbone
            with open(m["spec"], "w") as fh:
                fh.write(spec_lib.dumps(spec))
    common = [f"--dataset={a.dataset}", f"--batch_size={a.batch_size}", "--noprogress",
              *([f"--limit={a.train_limit}"] if a.train_limit else [])]
    try:  # every setting a stage's result depends on (not --variants, --fractions, --seeds, --latency_rounds)
        ledger = harness.Ledger(a.ledger or None, a.work_dir, setup={
            k: getattr(a, k) for k in ("dataset", "train_limit", "width", "pretrain_epochs", "search_epochs",
                                       "finetune_epochs", "batch_size", "lr", "lam", "psi_lr", "normalize",
                                       "no_refill")})
    except ValueError as e:
        print(f"fgnas_ablation: --ledger: {e}", file=sys.stderr)
        return 2
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), StageTimes.previous(a.out))
    results: dict = {}
    t0 = time.time()

    def report():
        rows = {}
        for name, m in models.items():
            runs = [results[(name, s)] for s in seeds if (name, s) in results]
            spec_file = runs[0]["spec"] if runs else m.get("spec")
            if not spec_file or not os.path.exists(spec_file):
                continue
            c = count(spec_lib.loads(open(spec_file, "rb").read()))
            top1 = [r["top1"] for r in runs]
            row = {"group": m["group"], "macs": c.macs, "params": c.params, "seeds": [r["seed"] for r in runs],
                   "top1_per_seed": top1, **{k: m[k] for k in ("fraction", "target", "width") if k in m}}
            if top1:
                row["top1_mean"] = float(np.mean(top1))
                row["top1_std"] = float(np.std(top1, ddof=1)) if len(top1) > 1 else None
                mean = row["top1_mean"]
                row["top1_err"] = (row["top1_std"] / math.sqrt(len(top1)) if len(top1) > 1 else
                                   math.sqrt(mean * (1 - mean) / TEST_IMAGES))
                row["top1_err_kind"] = "std error over seeds" if len(top1) > 1 else "binomial SE of one seed"
            if runs and "search" in runs[0]:
                row["search"] = [r["search"] for r in runs]
            if name in latency:
                row["latency_ms"] = latency[name]
            rows[name] = row
        result = {"setup": {"dataset": a.dataset, "train_limit": a.train_limit or "all", "test_images": TEST_IMAGES,
                            "backbone": f"search.fgnas_space.vgg_space({a.width})", "backbone_macs": full,
                            "variants": {v: dict(zip(("kernels", "acts", "gating"), VARIANTS[v])) for v in variants},
                            "fractions": fractions, "seeds": seeds,
                            "fgnas_schedule": f"{a.pretrain_epochs} pre-train + <= {a.search_epochs} search + "
                                              f"{a.finetune_epochs} fine-tune epochs, lambda {a.lam} (R/R0, R0: "
                                              f"{a.normalize}), psi lr "
                                              f"{'recipe default' if a.psi_lr is None else a.psi_lr} (SGD), "
                                              f"{'no refill' if a.no_refill else 'refill after the stopping step'}",
                            "baseline_epochs": epochs, "batch_size": a.batch_size,
                            "optimizer": f"SGD Nesterov 0.9, lr {a.lr}, 1 warm-up epoch, cosine, wd 1e-4"},
                  "models": rows, "stage_seconds": dict(seconds), "stages_run_now": seconds.ran,
                  "host": host_info(),
                  "command": "python -m benchmarks.fgnas_ablation " + " ".join(sys.argv[1:] if argv is None else argv)}
        write_json(a.out, round_floats(result))
        plot(rows, os.path.splitext(a.out)[0] + ".png",
             f"FGNAS search-space ablation, VGG w{a.width} ({full / 1e6:.2f}M MACs), CIFAR-10 "
             f"({a.train_limit or 50000} training images)")

    latency: dict = {}
    for seed in seeds:
        for name, m in models.items():
            out_dir = os.path.join(a.work_dir, "runs", f"{name}_s{seed}")
            if m["group"] in VARIANTS:
                kernels, acts, gating = VARIANTS[m["group"]]
                card, kept = os.path.join(out_dir, "finetune", "model_card.json"), SEARCH_FILES
                args = ["recipes.search_fgnas", "--space=vgg", f"--width={a.width}", f"--kernels={kernels}",
                        f"--acts={acts}", f"--gating={gating}", f"--target={m['target']}",
                        f"--pretrain_epochs={a.pretrain_epochs}",
                        f"--search_epochs={a.search_epochs}", f"--finetune_epochs={a.finetune_epochs}",
                        f"--w_lr={a.lr}", f"--lam={a.lam}", f"--normalize={a.normalize}", "--val_limit=0",
                        *([] if a.psi_lr is None else [f"--psi_lr={gate_lr(a, kernels, acts):g}"]),
                        *(["--norefill"] if a.no_refill else []),
                        f"--seed={seed}", f"--name={name.lower().replace('.', 'p')}", f"--out_dir={out_dir}", *common]
            else:
                card, kept = os.path.join(out_dir, "model_card.json"), ["model_card.json"]
                args = ["recipes.train", f"--model={m['spec']}", "--weights=", f"--epochs={epochs}", f"--lr={a.lr}",
                        "--nesterov", "--weight_decay=1e-4", "--label_smoothing=0", f"--val_freq={epochs}",
                        f"--seed={seed}", f"--out_dir={out_dir}", *common]
            ledger.restore(out_dir, kept)
            if not os.path.exists(card):
                seconds.record(f"{name}_s{seed}", run_stage(name, args, os.path.join(logs, f"{name}_s{seed}.log")))
            ledger.keep(out_dir, kept)
            c = _load(card)
            res = {"seed": seed, "top1": c["metrics"]["val_top1"], "command": "python -m " + " ".join(args),
                   "spec": m.get("spec") or os.path.join(out_dir, "derived.json")}
            if m["group"] in VARIANTS:
                s = _load(os.path.join(out_dir, "summary.json"))
                res["search"] = {k: s.get(k) for k in ("reached", "reached_step", "macs", "vs_target", "kept_share",
                                                        "compositional_share", "refill")}
            results[(name, seed)] = res
            report()
    if a.latency_rounds:
        specs = {n: (results[(n, seeds[0])]["spec"]) for n in models if (n, seeds[0]) in results}
        latency.update(measure_latency(specs, a.latency_rounds))
    report()
    print(f"{time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
