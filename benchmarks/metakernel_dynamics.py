"""Why the meta-kernel search's argmax collapsed, and what fixes it: an ablation of the search dynamics.

Each variant is one ``recipes.search_metakernel`` run without projection (``--noproject``) on the same data, space,
target and seed; they differ in one lever at a time, cumulatively:

- ``pull``: the project's earlier cost loss (pulls toward T inside the η band), α lr 3e-3, α on a held-out split,
  no warm-up — the configuration whose argmax collapsed (issue 14);
- ``paper``: the paper's Eq. 6 (dead zone: 0 inside ``T(1±η)``), everything else as ``pull``;
- ``paper_lr``: + α learning rate 1e-2;
- ``paper_lr_warmup``: + one warm-up epoch (weights only, FBNet/ProxylessNAS);
- ``paper_lr_warmup_same``: + α on the weights' batches (the paper's Algorithm 1) instead of a held-out split;
- ``paper_lr3_warmup_same``, ``paper_lr10_warmup_same``: the same with α learning rate 3e-2 and 1e-1;
- ``paper_lr_nodecay``, ``paper_lr_warmup_same_nodecay``: ``paper_lr`` and ``paper_lr_warmup_same`` without the L2
  penalty on α (1e-3 in all variants above, the search's default until this ablation).

``--limit`` applies to each split: the held-out variants train the weights on N images and α on another N (from
the held-out 20%), ``same`` trains both on the same N; every variant takes N / batch steps per epoch.

Per variant the JSON records, at the end of the search: E[MACs], the argmax architecture's MACs and its distance
to T (the issue's bar: within ±10% without projection), how many filters a projection to within 3% would move (the
bar: ≤ 5%), the mean max choice probability (how decided α is), the kernel mixture (layers with ≥ 2 kernel sizes at
≥ 10% each) and the argmax supernet's top-1 after BN re-estimation (on ``--val_limit`` test images: a diagnostic,
not used to pick anything). Per-epoch trajectories come from each run's ``history.json``.

    python -m benchmarks.metakernel_dynamics --out benchmarks/results/metakernel_dynamics.json

Each run lives in ``--work_dir/<target>/<variant>`` and resumes from its epoch checkpoints; a finished run is
skipped, so rerunning the command continues. A PNG (argmax MACs and E[MACs] per epoch per variant) is written beside
the JSON.
"""
from __future__ import annotations

import json
import os
import sys
import time

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, write_json

DATA = "folder:../shared/data/cifar10"
BASE = {"cost_form": "pull", "a_lr": "0.003", "alpha_data": "holdout", "warmup_epochs": "0", "a_weight_decay": "0.001"}
VARIANTS = {
    "pull": {},
    "paper": {"cost_form": "paper"},
    "paper_lr": {"cost_form": "paper", "a_lr": "0.01"},
    "paper_lr_warmup": {"cost_form": "paper", "a_lr": "0.01", "warmup_epochs": "1"},
    "paper_lr_warmup_same": {"cost_form": "paper", "a_lr": "0.01", "warmup_epochs": "1", "alpha_data": "same"},
    "paper_lr3_warmup_same": {"cost_form": "paper", "a_lr": "0.03", "warmup_epochs": "1", "alpha_data": "same"},
    "paper_lr10_warmup_same": {"cost_form": "paper", "a_lr": "0.1", "warmup_epochs": "1", "alpha_data": "same"},
    "paper_lr_nodecay": {"cost_form": "paper", "a_lr": "0.01", "a_weight_decay": "0"},
    "paper_lr_warmup_same_nodecay": {"cost_form": "paper", "a_lr": "0.01", "warmup_epochs": "1", "alpha_data": "same",
                                     "a_weight_decay": "0"},
}


def _load(path):
    with open(path) as f:
        return json.load(f)


def _row(summary: dict, history: list[dict], target: float) -> dict:
    last = history[-1]
    return {"expected_macs": summary["expected_macs"], "argmax_macs": summary["argmax_macs"],
            "argmax_vs_target": summary["argmax_vs_target"],
            "within_eta_band": abs(summary["argmax_vs_target"]) <= 0.10,
            "projection_moves": summary["projection_moves"], "searchable_filters": summary["searchable_filters"],
            "projection_filters_changed": summary.get("projection_filters_changed"),
            "projection_moved_share": summary["projection_moved_share"],
            "mean_max_prob": last.get("mean_max_prob"), "argmax_val_acc": summary["argmax_val_acc"],
            "mixed_layers": summary["argmax_mixture"]["mixed_layers"], "layers": summary["argmax_mixture"]["layers"],
            "argmax_mixture": summary["argmax_mixture"]["per_layer"], "labels": summary["argmax_mixture"]["labels"],
            "per_epoch": {k: [h.get(k) for h in history] for k in
                          ("expected_macs", "argmax_macs", "mean_max_prob", "val_acc_argmax", "train_acc")},
            "search_seconds": round(sum(h["seconds"] for h in history))}


def plot(result: dict, path: str) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    targets = list(result["targets"])
    fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets) + 3.2, 4.4), squeeze=False)
    handles = {}
    for ax, t in zip(axes[0], targets):
        target = float(t)
        for name, row in result["targets"][t].items():
            c = plt.cm.tab10(list(VARIANTS).index(name) % 10)
            e = [v / 1e6 for v in row["per_epoch"]["expected_macs"] if v == v]
            a = [v / 1e6 for v in row["per_epoch"]["argmax_macs"]]
            (h,) = ax.plot(range(1, len(a) + 1), a, "-o", ms=3, color=c)
            ax.plot(range(len(a) - len(e) + 1, len(a) + 1), e, ":", color=c)
            handles[name] = h
        band = ax.axhspan(target * 0.9 / 1e6, target * 1.1 / 1e6, color="grey", alpha=0.2)
        handles["T ± 10% (η band)"] = band
        ax.set_xlabel("search epoch")
        ax.set_xticks(range(1, result["setup"]["epochs"] + 1))
        ax.set_ylabel("MACs (M)")
        ax.set_title(f"T = {target / 1e6:g}M: argmax MACs (solid) vs E[MACs] (dotted)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right")
    fig.subplots_adjust(right=1 - 2.1 / fig.get_figwidth(), wspace=0.25)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path (a PNG is written beside it)")
    p.add_argument("--work_dir", default="runs/metakernel_dynamics", help="run outputs and logs")
    p.add_argument("--targets", default="3e6,4.5e6", help="comma-separated MACs targets")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {','.join(VARIANTS)}")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--limit", type=int, default=10000, help="training images used (first N of a fixed permutation)")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--val_limit", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        targets = [float(t) for t in a.targets.split(",")]
    except ValueError:
        print(f"metakernel_dynamics: --targets={a.targets}: comma-separated numbers", file=sys.stderr)
        return 2
    variants = a.variants.split(",")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        print(f"metakernel_dynamics: --variants: unknown {','.join(bad)} (known: {','.join(VARIANTS)})",
              file=sys.stderr)
        return 2
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        print(f"metakernel_dynamics: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    from recipes.cli import run_stage

    result = {"setup": {"dataset": a.dataset, "limit": a.limit, "holdout": 0.2, "width": a.width,
                        "epochs": a.epochs, "batch_size": a.batch_size, "val_limit": a.val_limit, "seed": a.seed,
                        "candidates": [3, 5, 7], "lam": 2.0, "eta": 0.1, "tau": "5 -> 0.5",
                        "base": BASE, "variants": VARIANTS},
              "targets": {}}
    t0 = time.time()
    for target in targets:
        rows = result["targets"].setdefault(f"{target:g}", {})
        for v in VARIANTS:  # the requested ones run; the others are reported when a finished run is on disk
            out_dir = os.path.join(a.work_dir, f"T{target:g}", v)
            if v not in variants and not os.path.exists(os.path.join(out_dir, "summary.json")):
                continue
            flags = dict(BASE, **VARIANTS[v])
            args = ["recipes.search_metakernel", f"--dataset={a.dataset}", f"--limit={a.limit}", f"--width={a.width}",
                    f"--target_macs={target:g}", f"--epochs={a.epochs}", f"--batch_size={a.batch_size}",
                    f"--val_limit={a.val_limit}", f"--seed={a.seed}", "--noproject", "--noprogress",
                    f"--out_dir={out_dir}", *(f"--{k}={val}" for k, val in flags.items())]
            summary_path = os.path.join(out_dir, "summary.json")
            if not os.path.exists(summary_path):
                os.makedirs(out_dir, exist_ok=True)
                run_stage(v, args, os.path.join(a.work_dir, f"T{target:g}_{v}.log"))
            rows[v] = _row(_load(summary_path), _load(os.path.join(out_dir, "history.json")), target)
            rows[v]["command"] = "python -m " + " ".join(args)
            print(f"T={target:g} {v}: argmax {rows[v]['argmax_vs_target']:+.1%}, E[MACs] "
                  f"{rows[v]['expected_macs'] / target - 1:+.1%}, max p {rows[v]['mean_max_prob']:.2f}, "
                  f"projection moves {rows[v]['projection_moved_share']:.1%}, mixed "
                  f"{rows[v]['mixed_layers']}/{rows[v]['layers']}, argmax top-1 {rows[v]['argmax_val_acc']}",
                  flush=True)
            result["host"], result["seconds"] = host_info(), round(time.time() - t0)
            result["command"] = "python -m benchmarks.metakernel_dynamics " + " ".join(
                sys.argv[1:] if argv is None else argv)
            write_json(a.out, round_floats(result))
    plot(result, os.path.splitext(a.out)[0] + ".png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
