"""The meta-kernel paper's Fig. 4 at CPU scale: one kernel size vs MixConv partitions vs meta-kernel search, all at
matched MACs, retrained with one schedule over several seeds, with LiteRT latency.

Backbone: :func:`search.metakernel_space.ablation_space` (32×32 CIFAR, ReLU inverted residuals, no SE, every block
expanded so that every depthwise filter can choose its kernel). Models, every one within ``--tol`` of the target
MACs (``--target``, default: every kernel 7×7 at expansion 3) — the baselines by scaling their expanded widths,
the searched models through the search's budget (its final projection trims the argmax to within 3%):

- **A** (vanilla depthwise): one kernel size everywhere, ``--a_kernels`` (3/5/7/9);
- **B** (MixConv, uniform partition) and **C** (MixConv, exponential partition: 1/2, 1/4, …, the last group takes
  the rest) over the first n odd sizes from 3, n in ``--sets`` (2–6 → {3,5} … {3,…,13}); for two sizes C is B's
  network (1/2, 1/2): its row says ``identical_to`` and reuses B's trainings;
- **searched**: ``recipes.search_metakernel --space=ablation`` with the same candidate set and the target MACs
  (expansion-6 supernet, "None" prunes; α on a held-out 20% of the training images; the argmax, trimmed by the
  projection if it misses by more than 3%).

Each model is trained from scratch by ``recipes.train`` (same flags for all; ``--train_limit`` training images) for
every seed in ``--seeds`` and scored on the 5,000 test images of ``../shared/data/cifar10``; the JSON reports mean ±
std of top-1 per model, the differences to the best baseline with their standard errors, MACs, params and the
median single-thread LiteRT latency (interleaved rounds, one process). Stages write their outputs under
``--work_dir`` and are skipped when present, so rerunning the command resumes; the JSON and the plot are rewritten
after every finished training.

    python -m benchmarks.kernel_ablation --out benchmarks/results/kernel_ablation.json
    python -m benchmarks.kernel_ablation --out ... --sets=3 --seeds=0,1,2     # one candidate set first
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, write_json

DATA = "folder:../shared/data/cifar10"


def _load(path):
    with open(path) as f:
        return json.load(f)


def _candidates(n: int) -> tuple[int, ...]:
    return tuple(3 + 2 * i for i in range(n))


def _tag(kernels) -> str:
    return "-".join(str(k) for k in kernels)


def derivation_check(search_dir: str) -> dict:
    """How the search's final α derives under two rules (cached as ``derivation.json`` in the search directory):
    the argmax over {None, sizes} (the search's rule) and a hierarchical one (keep a filter iff p(None) < ½, then its
    most probable size): MACs of each vs the target, and the share of filters each prunes. "None" is one choice
    while the keep probability is split over the sizes, so the argmax prunes more as sizes are added."""
    cache = os.path.join(search_dir, "derivation.json")
    if os.path.exists(cache):
        return _load(cache)
    import tensorflow as tf

    from search.metakernel_space import ablation_space
    from search.supernet import MetaKernelSupernet, build_supernet
    from workflows.search_metakernel import ABLATION_EXPAND
    settings = _load(os.path.join(search_dir, "search_settings.json"))
    space = ablation_space(tuple(int(c) for c in settings["candidates"]), ABLATION_EXPAND, 10)
    model = build_supernet(space)
    ckpt = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), os.path.join(search_dir, "checkpoints"), 2)
    tf.train.Checkpoint(model=model).restore(ckpt.latest_checkpoint).expect_partial()
    net = MetaKernelSupernet(model, space)
    argmax = net.choices()
    keep_first = []
    for block, c in zip(net.blocks, argmax):
        if not block.dw.allow_none:
            keep_first.append(c)
            continue
        a = np.asarray(block.dw.alpha)
        p = np.exp(a - a.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        h = np.where(p[:, 0] < 0.5, 1 + np.argmax(a[:, 1:], -1), 0)
        if not h.any():
            h[int(np.argmin(p[:, 0]))] = 1 + int(np.argmax(a[int(np.argmin(p[:, 0])), 1:]))
        keep_first.append(h)
    target = float(settings["target_macs"])
    pruned = lambda arch: float(np.mean(np.concatenate([c for c, b in zip(arch, net.blocks)  # noqa: E731
                                                        if b.dw.allow_none]) == 0))
    out = {"target_macs": target, "argmax_vs_target": net.macs(argmax) / target - 1,
           "keep_first_vs_target": net.macs(keep_first) / target - 1,
           "argmax_pruned_share": pruned(argmax), "keep_first_pruned_share": pruned(keep_first)}
    write_json(cache, round_floats(out))
    return out


def plan_models(a) -> list[dict]:
    """Every model of the run: ``{"name", "group", "kernels"}`` (TensorFlow-free)."""
    models = []
    if "A" in a.groups:
        models += [{"name": f"A_k{k}", "group": "A", "kernels": (k,)} for k in a.a_kernels]
    for n in a.sets:
        ks = _candidates(n)
        for group, partition in (("B", "uniform"), ("C", "exponential")):
            if group in a.groups:
                models.append({"name": f"{group}_k{_tag(ks)}", "group": group, "kernels": ks,
                               "partition": partition})
        if "searched" in a.groups:
            models.append({"name": f"searched_k{_tag(ks)}", "group": "searched", "kernels": ks})
    return models


def write_baseline_specs(a, models, target: float, dry_run: bool = False) -> dict:
    """Writes the A/B/C specs at matched MACs (``dry_run``: only checks that they exist); returns ``{name:
    expansion scale}``. Raises ValueError when a baseline cannot be matched."""
    from common.io import write_text
    from models import spec as spec_lib
    from search.metakernel_space import ablation_space
    space = ablation_space(expand=3)
    scales = {}
    for m in models:
        if m["group"] == "searched":
            continue
        path = os.path.join(a.work_dir, "specs", f"{m['name']}.json")
        spec, scale = space.matched(m["kernels"], m.get("partition", "uniform"), target, a.tol,
                                    name=m["name"].lower().replace("-", "_"))
        scales[m["name"]] = scale
        if not dry_run and not os.path.exists(path):
            write_text(path, spec_lib.dumps(spec))
    return scales


def spec_path(a, m) -> str:
    if m["group"] == "searched":
        return os.path.join(a.work_dir, "search", m["name"], "derived.json")
    return os.path.join(a.work_dir, "specs", f"{m['name']}.json")


def measure_latency(specs: dict[str, str], rounds: int) -> dict:
    """Single-thread LiteRT latency summaries (wall clock) per spec file, every model in one process, interleaved
    rounds (:func:`benchmarks.harness.litert_latency`)."""
    from benchmarks.harness import litert_latency
    from models import spec as spec_lib
    loaded = {}
    for name, path in specs.items():
        with open(path) as f:
            loaded[name] = spec_lib.loads(f.read())
    return litert_latency(loaded, rounds, clock="wall")


def _same_architecture(path_a: str, path_b: str) -> bool:
    """Whether two spec files describe the same network (names aside)."""
    specs = []
    for p in (path_a, path_b):
        d = _load(p)
        d.pop("name", None)
        specs.append(d)
    return specs[0] == specs[1]


def aggregate(a, models, cards: dict, latency: dict, searches: dict, target: float) -> dict:
    from models import spec as spec_lib
    from models.counting import count
    rows = {}
    for m in models:
        path = spec_path(a, m)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            c = count(spec_lib.loads(f.read()))
        top1 = [cards[(m["name"], s)]["metrics"]["val_top1"] for s in a.seeds if (m["name"], s) in cards]
        row = {"group": m["group"], "kernels": list(m["kernels"]), "partition": m.get("partition"),
               "macs": c.macs, "macs_vs_target": c.macs / target - 1, "params": c.params,
               "top1_per_seed": top1, "seeds": [s for s in a.seeds if (m["name"], s) in cards]}
        if top1:
            row["top1_mean"] = float(np.mean(top1))
            row["top1_std"] = float(np.std(top1, ddof=1)) if len(top1) > 1 else None
        if m["name"] in latency:
            row["latency_ms"] = latency[m["name"]]
        if m["name"] in searches:
            row["search"] = searches[m["name"]]
        if m["group"] == "C":  # MixConv's exponential split gives the last group the rest: for 2 sizes it is B's
            twin = spec_path(a, {**m, "group": "B", "name": m["name"].replace("C_", "B_", 1)})
            if os.path.exists(twin) and _same_architecture(path, twin):
                row["identical_to"] = os.path.splitext(os.path.basename(twin))[0]
        rows[m["name"]] = row
    return rows


def compare(rows: dict) -> dict:
    """Per searched model: its top-1 minus the best baseline (A/B/C) with the same candidate set or A, with the
    standard error of the difference (independent seeds) and whether it exceeds two of them."""
    out = {}
    for name, r in rows.items():
        if r["group"] != "searched" or len(r.get("top1_per_seed", ())) < 2:
            continue
        rivals = {n: b for n, b in rows.items() if b["group"] != "searched" and len(b.get("top1_per_seed", ())) >= 2
                  and (b["group"] == "A" or b["kernels"] == r["kernels"])}
        if not rivals:
            continue
        best = max(rivals, key=lambda n: rivals[n]["top1_mean"])
        b = rivals[best]
        se = float(np.sqrt(r["top1_std"] ** 2 / len(r["top1_per_seed"]) + b["top1_std"] ** 2 / len(b["top1_per_seed"])))
        diff = r["top1_mean"] - b["top1_mean"]
        out[name] = {"best_rival": best, "diff": diff, "se": se, "exceeds_2se": abs(diff) > 2 * se}
    return out


def plot(rows: dict, path: str, target: float, tol: float = 0.02) -> None:
    """Three panels: A (top-1 vs kernel size), B/C/searched (top-1 vs number of kernel sizes, best A as a band),
    every model's top-1 vs its MACs. Error bars: std over seeds."""
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, (ax_a, ax_m, ax_c) = plt.subplots(1, 3, figsize=(15, 4.4))
    style = {"A": ("tab:grey", "s"), "B": ("tab:blue", "o"), "C": ("tab:green", "^"), "searched": ("tab:red", "*")}
    names = {"A": "A: one kernel size", "B": "B: MixConv, uniform split", "C": "C: MixConv, exponential split",
             "searched": "meta-kernel search"}
    done = {n: r for n, r in rows.items() if "top1_mean" in r}
    for group, (color, marker) in style.items():
        g = sorted(((n, r) for n, r in done.items() if r["group"] == group),
                   key=lambda nr: nr[1]["kernels"][0] if group == "A" else len(nr[1]["kernels"]))
        if not g:
            continue
        y = [100 * r["top1_mean"] for _, r in g]
        e = [100 * (r["top1_std"] or 0) for _, r in g]
        if group == "A":
            ax_a.errorbar([r["kernels"][0] for _, r in g], y, yerr=e, color=color, marker=marker, ms=7, capsize=3)
            best = max(range(len(g)), key=lambda i: y[i])
            ax_m.axhspan(y[best] - e[best], y[best] + e[best], color=color, alpha=0.2,
                         label=f"best A (k={g[best][1]['kernels'][0]}) ± std")
        else:
            dx = {"B": -0.08, "C": 0.0, "searched": 0.08}[group]
            ax_m.errorbar([len(r["kernels"]) + dx for _, r in g], y, yerr=e, color=color, marker=marker, ms=8,
                          capsize=3, label=names[group])
        ax_c.errorbar([r["macs"] / 1e6 for _, r in g], y, yerr=e, color=color, marker=marker, ms=7, capsize=3,
                      linestyle="none", label=names[group])
    ax_a.set_xlabel("kernel size k (every depthwise filter)")
    ax_a.set_ylabel("top-1 on the 5,000 CIFAR-10 test images (%)")
    ax_a.set_title("A: vanilla depthwise, matched MACs", fontsize=9)
    ax_m.set_xlabel("number of kernel sizes {3, 5, …}")
    sizes = sorted({len(r["kernels"]) for r in done.values() if r["group"] != "A"}) or [3]
    ax_m.set_xticks(sizes)
    ax_m.set_xlim(sizes[0] - 0.5, sizes[-1] + 0.5)
    ax_m.set_title("mixed kernels vs the best single size, matched MACs", fontsize=9)
    ax_c.axvspan((1 - tol) * target / 1e6, (1 + tol) * target / 1e6, color="grey", alpha=0.15,
                 label=f"target ± {tol:.0%}")
    ax_c.set_xlabel("MACs (M)")
    ax_c.set_title("top-1 vs MACs (mean ± std over seeds)", fontsize=9)
    for ax in (ax_a, ax_m, ax_c):
        ax.grid(alpha=0.3)
    ax_m.legend(fontsize=7)
    ax_c.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path (a PNG is written beside it)")
    p.add_argument("--work_dir", default="runs/kernel_ablation", help="specs, searches, trainings and logs")
    p.add_argument("--groups", default="A,B,C,searched", help="comma-separated, of A,B,C,searched")
    p.add_argument("--a_kernels", default="3,5,7,9", help="kernel sizes of baseline A")
    p.add_argument("--sets", default="2,3,4,5,6", help="numbers of kernel sizes (2–6) for B, C and searched")
    p.add_argument("--seeds", default="0,1,2", help="training seeds")
    p.add_argument("--target", type=float, default=None, help="MACs of every model (default: A 7×7 at expansion 3)")
    p.add_argument("--tol", type=float, default=0.02, help="relative MACs tolerance of the baselines")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--train_limit", type=int, default=10000, help="training images per retraining (0: all)")
    p.add_argument("--epochs", type=int, default=10, help="retraining epochs")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2, help="SGD peak learning rate (1 warm-up epoch, cosine)")
    p.add_argument("--search_limit", type=int, default=10000,
                   help="images of a search's weight split (and at most as many of its held-out α split)")
    p.add_argument("--search_epochs", type=int, default=4)
    p.add_argument("--search_flags", default="",
                   help="extra comma-separated flags of recipes.search_metakernel (default: its defaults)")
    p.add_argument("--latency_rounds", type=int, default=5, help="interleaved LiteRT timing rounds (0: skip)")
    a = p.parse_args(argv)
    try:
        a.groups = [g for g in a.groups.split(",") if g]
        a.a_kernels = [int(k) for k in a.a_kernels.split(",") if k]
        a.sets = [int(n) for n in a.sets.split(",") if n]
        a.seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError as e:
        print(f"kernel_ablation: --a_kernels/--sets/--seeds: comma-separated integers ({e})", file=sys.stderr)
        return 2
    bad = [g for g in a.groups if g not in ("A", "B", "C", "searched")]
    if bad or not a.groups:
        print(f"kernel_ablation: --groups: unknown {','.join(bad) or '(empty)'} (of A,B,C,searched)", file=sys.stderr)
        return 2
    if any(not 2 <= n <= 6 for n in a.sets) or any(k < 1 or k % 2 == 0 for k in a.a_kernels) or not a.seeds:
        print("kernel_ablation: --sets take 2–6 sizes, --a_kernels odd sizes, --seeds at least one", file=sys.stderr)
        return 2
    if not 0 < a.tol < 0.5 or a.epochs < 2 or a.train_limit < 0 or a.search_epochs < 2 or a.search_limit < 0:
        print("kernel_ablation: --tol in (0, 0.5), --epochs and --search_epochs ≥ 2 (one warm-up epoch), "
              "--train_limit and --search_limit ≥ 0", file=sys.stderr)
        return 2
    if a.target is not None and a.target <= 0:
        print(f"kernel_ablation: --target={a.target}: a positive number of MACs", file=sys.stderr)
        return 2
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        print(f"kernel_ablation: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    from models.counting import count
    from recipes.cli import run_stage
    from search.metakernel_space import ablation_space

    target = a.target or float(count(ablation_space(expand=3).mixed((7,))).macs)
    models = plan_models(a)
    try:
        scales = write_baseline_specs(a, models, target, dry_run=True)
    except ValueError as e:
        print(f"kernel_ablation: --target={target:.0f}: {e}", file=sys.stderr)
        return 2
    from workflows.search_metakernel import ABLATION_EXPAND
    for m in models:
        lo, hi = ablation_space(m["kernels"], ABLATION_EXPAND).macs_range() if m["group"] == "searched" else (0, 1e30)
        if not lo < target < hi:
            print(f"kernel_ablation: --target={target:.0f}: the {m['name']} search space reaches only {lo:,} … "
                  f"{hi:,} MACs", file=sys.stderr)
            return 2
    os.makedirs(os.path.join(a.work_dir, "logs"), exist_ok=True)
    write_baseline_specs(a, models, target)
    t0 = time.time()
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), seed=StageTimes.previous(a.out))
    searches = {}
    for m in models:
        if m["group"] != "searched":
            continue
        out_dir = os.path.join(a.work_dir, "search", m["name"])
        args = ["recipes.search_metakernel", "--space=ablation", f"--dataset={a.dataset}",
                f"--candidates={','.join(map(str, m['kernels']))}", f"--target_macs={target:.0f}",
                f"--epochs={a.search_epochs}", *([f"--limit={a.search_limit}"] if a.search_limit else []),
                "--batch_size=64", "--seed=0",
                f"--name={m['name'].lower().replace('-', '_')}", "--noprogress", f"--out_dir={out_dir}",
                *[f for f in a.search_flags.split(",") if f]]
        if not os.path.exists(os.path.join(out_dir, "summary.json")):
            seconds.record(f"search/{m['name']}", run_stage(m["name"], args, os.path.join(a.work_dir, "logs",
                                                                                         f"search_{m['name']}.log")))
        s = _load(os.path.join(out_dir, "summary.json"))
        keys = ("argmax_macs", "argmax_vs_target", "expected_macs", "projection_moves", "projection_filters_changed",
                "projection_moved_share", "argmax_val_acc")
        searches[m["name"]] = {k: s.get(k) for k in keys}
        searches[m["name"]]["mixed_layers"] = f"{s['mixture']['mixed_layers']}/{s['mixture']['layers']}"
        searches[m["name"]]["derivation"] = derivation_check(out_dir)
        searches[m["name"]]["command"] = "python -m " + " ".join(args)

    cards, latency = {}, {}
    lat_path = os.path.join(a.work_dir, "latency.json")

    def report():
        rows = aggregate(a, models, cards, latency, searches, target)
        result = {
            "setup": {"dataset": a.dataset, "backbone": "search.metakernel_space.ablation_space (expansion 3 for "
                      "A/B/C, widths scaled to the target; 6 for the search supernet)", "target_macs": target,
                      "tol": a.tol, "train_limit": a.train_limit or "all", "epochs": a.epochs,
                      "batch_size": a.batch_size,
                      "optimizer": f"SGD momentum 0.9 (no Nesterov), lr {a.lr}, 1 warm-up epoch, cosine, "
                                   "weight decay default of recipes.train", "seeds": a.seeds, "test_images": 5000,
                      "search": {"limit": a.search_limit, "epochs": a.search_epochs, "flags": a.search_flags},
                      "expansion_scales": scales},
            "models": rows, "searched_vs_best_baseline": compare(rows),
            "stage_seconds": dict(seconds), "stages_run_now": seconds.ran, "host": host_info(),
            "command": "python -m benchmarks.kernel_ablation " + " ".join(sys.argv[1:] if argv is None else argv)}
        write_json(a.out, round_floats(result))
        plot(rows, os.path.splitext(a.out)[0] + ".png", target, a.tol)

    for seed in a.seeds:
        for m in models:
            out_dir = os.path.join(a.work_dir, "train", f"{m['name']}_s{seed}")
            card = os.path.join(out_dir, "model_card.json")
            twin = m["name"].replace("C_", "B_", 1)
            if m["group"] == "C" and (twin, seed) in cards and _same_architecture(
                    spec_path(a, m), spec_path(a, {**m, "group": "B", "name": twin})):
                cards[(m["name"], seed)] = cards[(twin, seed)]  # the same network, seed and data: not retrained
                continue
            if not os.path.exists(card):
                args = ["recipes.train", f"--model={spec_path(a, m)}", "--weights=", f"--dataset={a.dataset}",
                        f"--epochs={a.epochs}", f"--batch_size={a.batch_size}", "--optimizer=sgd", f"--lr={a.lr}",
                        "--warmup_epochs=1", f"--seed={seed}", f"--val_freq={a.epochs}", "--noprogress",
                        f"--out_dir={out_dir}",
                        *([f"--limit={a.train_limit}"] if a.train_limit else [])]
                seconds.record(f"train/{m['name']}_s{seed}", run_stage(
                    m["name"], args, os.path.join(a.work_dir, "logs", f"train_{m['name']}_s{seed}.log")))
            cards[(m["name"], seed)] = _load(card)
            report()
    if a.latency_rounds:
        if os.path.exists(lat_path):
            latency.update(_load(lat_path))
        present = {m["name"]: spec_path(a, m) for m in models if os.path.exists(spec_path(a, m))}
        if set(present) - set(latency):  # every model re-timed together: one process, interleaved rounds
            latency.clear()
            latency.update(measure_latency(present, a.latency_rounds))
            write_json(lat_path, latency)
    report()
    print(f"{time.time() - t0:.0f} s", file=sys.stderr)
    print(json.dumps(compare(aggregate(a, models, cards, latency, searches, target)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
