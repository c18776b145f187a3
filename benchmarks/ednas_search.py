"""E-DNAS E1 and E3 (issue 18): the feedback block (Eq. 3–5) against one path at batch B and at batch 2B, and the
latency-table loss against the FLOPs loss at a matched budget.

Arms search ``cifar_space()`` (32×32) with the same number of steps and seeds:

- **a**: latency-table loss (``recipes.search_ednas``, the per-filter table of ``benchmarks.ednas_latency``), one
  path, batch B (``--nofeedback``);
- **b**: the same with the feedback pair: two paths on two batches of B per step, merged by β_j = tanh(1/L_j)/Σ
  (``--feedback``);
- **c**: the same, one path at batch 2B (``--nofeedback --batch_size=2B``): the images per step of b;
- **m**: the FLOPs loss (``recipes.search_metakernel --target_macs``), one path, batch B, at the MACs of the budget's
  reference network (the unpruned every-3×3 network, whose table latency is the latency arms' default budget);
- **r**: that reference network itself, no search: the same latency and MACs as the budgets.

E1 is ``--arms=a,b,c``, E3 ``--arms=a,m,r`` (the same work directory: arm a runs once).

Per search: the first α step with E[latency] inside T(1 ± η), the first epoch after which fewer than 1% of the
filters change their argmax (steps and wall-clock to each), the β spread, and the derived architecture's table
latency. Each derived model (argmax, projected onto T by the table when it misses it by more than 3%) is then
retrained from scratch with one schedule and scored on the 5,000 CIFAR-10 test images; all are timed together with
LiteRT (single thread, CPU time, interleaved rounds), so accuracy is compared at measured latency.

    python -m benchmarks.ednas_search --arms=a,b,c --out benchmarks/results/ednas_feedback.json   # E1
    python -m benchmarks.ednas_search --arms=a,m,r --out benchmarks/results/ednas_latency_loss.json  # E3

Resumable: a finished search or training (its ``summary.json`` / ``model_card.json``) is not rerun — across
sessions too: those files (and each search's ``history.json`` and ``derived.json``) are mirrored into ``--ledger``
(``benchmarks/results/ednas_search_runs``, committed, shared by E1 and E3), from which a run without the work
directory restores them; the ledger refuses other settings.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, litert_latency_ms, round_floats, train_top1, write_json

DATA = "folder:../shared/data/cifar10"
TABLE = os.path.join("benchmarks", "results", "ednas_latency_table.json")
LEDGER = os.path.join("benchmarks", "results", "ednas_search_runs")  # E1 and E3 share it (arm a runs once)
SEARCH_FILES = ["summary.json", "history.json", "derived.json"]  # summary.json first: it marks a finished search
LEGEND = {"a": "latency loss, B", "b": "latency loss, feedback 2 × B", "c": "latency loss, 2B", "m": "FLOPs loss, B",
          "r": "every 3×3, no search"}
ARMS = {"a": "latency loss, one path, batch B", "b": "latency loss, feedback pair, 2 × batch B",
        "c": "latency loss, one path, batch 2B", "m": "FLOPs loss, one path, batch B",
        "r": "no search: the budget's reference network (every filter 3×3, nothing pruned)"}


def _load(path):
    with open(path) as f:
        return json.load(f)


def convergence(history: list[dict], steps_per_epoch: int, threshold: float = 0.01) -> dict:
    """Steps and seconds until E[cost] first entered its band and until the argmax settled (the first epoch whose
    share of changed filters is below ``threshold``)."""
    seconds = np.cumsum([h["seconds"] for h in history])
    band = next((h["first_in_band_step"] for h in reversed(history) if h.get("first_in_band_step")), None)
    settled = next((i for i, h in enumerate(history) if h.get("argmax_changed_share") is not None
                    and h["argmax_changed_share"] < threshold), None)
    per_step = seconds[-1] / (len(history) * steps_per_epoch)
    return {"first_in_band_step": band, "first_in_band_s": None if band is None else float(band * per_step),
            "argmax_settled_epoch": None if settled is None else history[settled]["epoch"],
            "argmax_settled_step": None if settled is None else history[settled]["step"],
            "argmax_settled_s": None if settled is None else float(seconds[settled]),
            "argmax_changed_share": [h.get("argmax_changed_share") for h in history],
            "expected_ms": [h.get("expected_ms") for h in history], "argmax_ms": [h.get("argmax_ms") for h in history],
            "search_s": float(seconds[-1]), "seconds_per_step": float(per_step)}


def plot(rows: dict, path: str, target: float) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    colours = {"a": "tab:blue", "b": "tab:red", "c": "tab:green", "m": "tab:purple", "r": "black"}
    for arm, row in rows.items():
        for s, c in zip(row["seeds"], row["convergence"]):
            epochs = np.arange(1, len(c["expected_ms"]) + 1)
            label = f"{arm}: {LEGEND[arm]}" if s == row["seeds"][0] else None
            if c["expected_ms"][0] is not None:  # latency arms (the FLOPs arm steers MACs)
                axes[0].plot(epochs, c["expected_ms"], color=colours[arm], label=label)
                axes[0].plot(epochs, c["argmax_ms"], color=colours[arm], linestyle="--")
            share = [np.nan if v is None else 100 * v for v in c["argmax_changed_share"]]
            axes[1].plot(epochs, share, color=colours[arm], marker=".", label=label)
        if row.get("measured_ms"):  # bars: SE of the mean over seeds, or the binomial SE on 5,000 images for one
            p = row["top1_mean"]
            err = (row["top1_std"] / math.sqrt(len(row["top1"])) if row["top1_std"] is not None else
                   math.sqrt(p * (1 - p) / 5000))
            axes[2].errorbar(np.mean(row["measured_ms"]), 100 * p, yerr=100 * err, color=colours[arm], marker="o",
                             capsize=3, label=f"{arm}: {LEGEND[arm]}")
    axes[0].axhline(target, color="k", linestyle=":", linewidth=1, label="target")
    axes[0].set(title="E[latency] (solid) and argmax (dashed), table ms", xlabel="search epoch", ylabel="ms")
    axes[1].axhline(1.0, color="k", linestyle=":", linewidth=1)
    axes[1].set(title="filters whose argmax changed (%)", xlabel="search epoch", yscale="log")
    axes[2].set(title="retrained top-1 (±1 SE) vs measured latency", xlabel="LiteRT ms (1 thread, CPU time)",
                ylabel="top-1 (%)")
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.legend(fontsize=8)
        ax.tick_params(labelsize=9)
    for ax in axes[:2]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[2].xaxis.set_major_locator(MaxNLocator(3))
    axes[2].xaxis.set_major_formatter("{x:.4g}")
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--work_dir", default="runs/ednas_search")
    p.add_argument("--arms", default="a,b,c")
    p.add_argument("--seeds", default="0")
    p.add_argument("--latency_table", default=TABLE)
    p.add_argument("--target_ms", type=float, default=None,
                   help="budget (default: the table's latency of the unpruned every-3×3 network)")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--train_limit", type=int, default=10000, help="training images of search and retraining")
    p.add_argument("--batch_size", type=int, default=64, help="B")
    p.add_argument("--search_epochs", type=int, default=6)
    p.add_argument("--retrain_epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--latency_rounds", type=int, default=5)
    p.add_argument("--search_flags", default="", help="extra search flags, comma-separated (tests)")
    p.add_argument("--ledger", default=LEDGER,
                   help="folder (committed) mirroring each finished search's summary/history/derived JSON and each "
                        "training's model card, so a later session resumes without the work directory; '' for none")
    a = p.parse_args(argv)
    prog = "ednas_search"
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError as e:
        print(f"{prog}: --seeds: comma-separated integers ({e})", file=sys.stderr)
        return 2
    arms = [x for x in a.arms.split(",") if x]
    if not arms or any(x not in ARMS for x in arms) or not seeds:
        print(f"{prog}: --arms: comma-separated of {','.join(ARMS)}; --seeds: at least one", file=sys.stderr)
        return 2
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        print(f"{prog}: --dataset={a.dataset}: no such directory", file=sys.stderr)
        return 2
    from search import kernel_latency as kl
    try:
        table = kl.KernelLatency.load(a.latency_table)
    except ValueError as e:
        print(f"{prog}: --latency_table: {e}", file=sys.stderr)
        return 2
    from search.metakernel_space import cifar_space
    space = cifar_space(candidates=table.candidates)
    try:
        table.check(space)
    except ValueError as e:
        print(f"{prog}: --latency_table: {e} (this benchmark searches cifar_space())", file=sys.stderr)
        return 2
    every3 = kl.uniform_arch(space, 3 if 3 in table.candidates else table.candidates[0])
    target = a.target_ms or table.predict(space, every3)
    from models.counting import count
    target_macs = count(kl.arch_spec(space, every3)).macs
    from common.io import write_text
    from models import spec as spec_lib
    from recipes.cli import run_stage
    os.makedirs(os.path.join(a.work_dir, "logs"), exist_ok=True)
    try:  # every setting a stage's result depends on (not --arms, --seeds, --latency_rounds)
        ledger = harness.Ledger(a.ledger or None, a.work_dir, setup={
            k: getattr(a, k) for k in ("latency_table", "target_ms", "dataset", "train_limit", "batch_size",
                                       "search_epochs", "retrain_epochs", "lr", "search_flags")})
    except ValueError as e:
        print(f"{prog}: --ledger: {e}", file=sys.stderr)
        return 2
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), StageTimes.previous(a.out))
    steps = max(1, int(a.train_limit * 0.8) // a.batch_size)  # one pass of batch B over the weights' split
    extra = [f for f in a.search_flags.split(",") if f]
    rows, t0 = {}, time.time()
    for arm in arms:
        row = {"arm": ARMS[arm], "seeds": [], "convergence": [], "table_ms": [], "top1": [], "specs": [],
               "beta1_abs_dev_mean": []}
        for seed in seeds:
            name = f"{arm}_s{seed}"
            sdir = os.path.join(a.work_dir, "search", name)
            if arm == "r":  # no search: the reference network is trained as it is
                spec = os.path.join(a.work_dir, "specs", "every3x3.json")
                if not os.path.exists(spec):
                    os.makedirs(os.path.dirname(spec), exist_ok=True)
                    write_text(spec, spec_lib.dumps(kl.arch_spec(space, every3, name="every3x3")))
                row["seeds"].append(seed)
                row["table_ms"].append(table.predict(space, every3))
                row.setdefault("macs", []).append(target_macs)
                row["specs"].append(spec)
                row["top1"].append(train_top1(f"train_{name}", spec, os.path.join(a.work_dir, "train", name),
                                              os.path.join(a.work_dir, "logs", f"train_{name}.log"), seconds,
                                              a.dataset, a.retrain_epochs, 128, a.lr, seed, a.train_limit,
                                              ledger=ledger))
                continue
            budget = ([f"--target_macs={target_macs}"] if arm == "m" else
                      [f"--latency_table={a.latency_table}", f"--target_ms={target}"])
            args = ["recipes.search_ednas" if arm != "m" else "recipes.search_metakernel", f"--dataset={a.dataset}",
                    *budget, f"--limit={a.train_limit}", f"--epochs={a.search_epochs}",
                    f"--steps_per_epoch={steps}", f"--seed={seed}", "--noprogress", f"--out_dir={sdir}",
                    "--feedback" if arm == "b" else "--nofeedback",
                    f"--batch_size={2 * a.batch_size if arm == 'c' else a.batch_size}", *extra]
            ledger.restore(sdir, SEARCH_FILES)
            if not os.path.exists(os.path.join(sdir, "summary.json")):
                seconds.record(f"search_{name}", run_stage(name, args, os.path.join(a.work_dir, "logs",
                                                                                  f"search_{name}.log")))
            ledger.keep(sdir, SEARCH_FILES)
            history = _load(os.path.join(sdir, "history.json"))
            row["seeds"].append(seed)
            row["convergence"].append(convergence(history, steps))
            derived = spec_lib.loads(open(os.path.join(sdir, "derived.json"), "rb").read())
            row["table_ms"].append(table.predict(space, kl.arch_of(space, derived)))
            row.setdefault("macs", []).append(count(derived).macs)
            row["beta1_abs_dev_mean"].append(history[-1].get("feedback_beta1_abs_dev_mean"))
            spec = os.path.join(sdir, "derived.json")
            row["specs"].append(spec)
            row["top1"].append(train_top1(f"train_{name}", spec, os.path.join(a.work_dir, "train", name),
                                          os.path.join(a.work_dir, "logs", f"train_{name}.log"), seconds, a.dataset,
                                          a.retrain_epochs, 128, a.lr, seed, a.train_limit, ledger=ledger))
        row["top1_mean"] = float(np.mean(row["top1"]))
        row["top1_std"] = float(np.std(row["top1"], ddof=1)) if len(row["top1"]) > 1 else None
        rows[arm] = row
    lat_file = os.path.join(a.work_dir, f"latency_{'_'.join(arms)}.json")  # one timing session per arm set
    names = {f"{arm}_s{s}": spec for arm, row in rows.items() for s, spec in zip(row["seeds"], row["specs"])}
    lat = _load(lat_file) if os.path.exists(lat_file) else {}
    if set(lat) != set(names) and a.latency_rounds:
        t1 = time.time()
        lat = litert_latency_ms({n: spec_lib.loads(open(path, "rb").read()) for n, path in names.items()},
                                a.latency_rounds)
        write_json(lat_file, lat)
        seconds.record("latency", time.time() - t1)
    for arm, row in rows.items():
        row["measured_ms"] = [lat[f"{arm}_s{s}"] for s in row["seeds"]] if lat else []
    comparisons = {}
    for x, y in (("b", "c"), ("b", "a"), ("c", "a"), ("a", "m"), ("a", "r")):
        if x in rows and y in rows and len(seeds) > 1:
            d = rows[x]["top1_mean"] - rows[y]["top1_mean"]
            se = math.sqrt((rows[x]["top1_std"] ** 2 + rows[y]["top1_std"] ** 2) / len(seeds))
            comparisons[f"{x}_minus_{y}"] = {"diff": d, "se": se, "exceeds_2se": bool(abs(d) > 2 * se)}
    result = {
        "setup": {"target_macs": target_macs, "dataset": a.dataset, "train_limit": a.train_limit,
                  "batch_size_B": a.batch_size,
                  "steps_per_epoch": steps, "search_epochs": a.search_epochs, "retrain_epochs": a.retrain_epochs,
                  "retrain": f"recipes.train from scratch, SGD momentum 0.9, lr {a.lr}, batch 128, 1 warm-up epoch, "
                             "cosine", "seeds": seeds, "target_ms": target, "latency_table": a.latency_table,
                  "space": space.name, "test_images": 5000, "settled": "first epoch with < 1% of filters changing "
                  "argmax", "arms": {k: ARMS[k] for k in arms}},
        "arms": rows, "comparisons": comparisons, "stage_seconds": dict(seconds), "stages_run_now": seconds.ran,
        "host": host_info(), "wall_s": round(time.time() - t0, 1),
        "command": "python -m benchmarks.ednas_search " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_json(a.out, round_floats(result))
    plot(rows, os.path.splitext(a.out)[0] + ".png", target)
    for arm, row in rows.items():
        search = ""
        if row["convergence"]:
            c = row["convergence"][0]
            search = (f", in band at step {c['first_in_band_step']}, settled at epoch {c['argmax_settled_epoch']}, "
                      f"{c['seconds_per_step']:.2f} s/step")
        print(f"{arm} ({ARMS[arm]}): top-1 {row['top1_mean']:.4f}, table {np.mean(row['table_ms']):.3f} ms, "
              f"measured {np.mean(row['measured_ms']) if row['measured_ms'] else float('nan'):.3f} ms{search}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
