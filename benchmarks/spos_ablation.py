"""SPOS, the paper's Table 4 at CPU scale: one supernet, one MACs limit, six ways to pick a path, each retrained.

    python -m benchmarks.spos_ablation --out benchmarks/results/spos_ablation.json

The ShuffleNetV2 space of ``search.spos.cifar_space`` (``--width``, ``--depth``; block choices choice_3/5/7/x and the
paper's channel ratios 0.2 … 1.6) at 32×32. ``--depth`` defaults to 2,2,2,2 blocks per stage, not the paper's
4,4,8,4: at this budget (3,120 supernet steps of batch 64) the 20-block supernet stays at chance under per-block
sampling, while 8 blocks learn (``python -m benchmarks.spos_trainability``, README).

The MACs limit is the cost of the "all choice_3" network (every block choice_3 at ratio 1.0), so every row is a
network of at most that many MACs. One supernet is trained with block and channel choices under that limit
(``recipes.search_spos --phase=supernet``, constraint sampling), and the rows are:

- ``all_choice_3``: every block choice_3, ratio 1.0 (no search);
- ``random_blocks``: a uniform path with the channels fixed at 1.0, drawn until it meets the limit (one draw per
  seed: the spread over seeds includes the draw's);
- ``random_channels``: every block choice_3, uniform channel ratios under the limit (one draw per seed);
- ``block_search``: evolution over the block choices, channels fixed at 1.0 (``--fix_channel_ratio=1.0``);
- ``channel_search``: evolution over the channel ratios, every block choice_3 (``--fix_block=3``);
- ``block_channel_search``: evolution over both, with random search as its baseline; the derived path is the better
  of the two by supernet top-1 (``summary.json``'s ``derived_from`` says which).

The three searches share the supernet (each gets its own directory with a link to its checkpoints) and run once;
every row is retrained from scratch with one schedule (``recipes.train``: SGD momentum 0.9, ``--lr``, one warm-up
epoch, cosine, ``--retrain_epochs`` on the first ``--train_limit`` training images) for each of ``--seeds`` and
scored on the 5,000 CIFAR-10 test images; mean ± std over seeds, MACs, params, and LiteRT latency (float32, one
thread, CPU time, every network timed in one interleaved session). Each row is compared with ``all_choice_3`` and
the full search with the block-only search: the difference of means, its standard error from the two stds, and
whether it exceeds 2 SE. [Paper, ImageNet: block + channel search 74.7 > block search 74.3 > choice_3 + channel
search 73.9 > all choice_3 73.4 ≈ random.]

The one-shot assumption (``one_shot_rank``): every distinct retrained path — the rows' paths and ``--rank_paths``
more, drawn at evenly spaced MACs quantiles of the whole space and retrained with the first seed — is also scored on
the trained supernet (BN recalibrated, the searches' held-out images); Kendall τ-b between supernet top-1 and retrained
top-1 (mean over the path's seeds), with a 95% bootstrap interval over the paths, and Spearman ρ.

Resumable, across sessions too: finished searches (``summary.json``, ``derived.json``), trainings
(``model_card.json``) and the supernet top-1s (``rank/supernet_top1.json``) are mirrored into ``--ledger`` (committed
beside the result), from which a run without the work directory restores them; the ledger refuses other settings. A
search that has not finished, or a path without a supernet top-1, needs the supernet, which is retrained when the
work directory is gone.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, write_json

DATA = "folder:../shared/data/cifar10"
LEDGER = os.path.join("benchmarks", "results", "spos_ablation_runs")
PAPER_RATIOS = "0.2,0.4,0.6,0.8,1.0,1.2,1.4,1.6"
ROWS = {
    "all_choice_3": "every block choice_3, ratio 1.0 (no search)",
    "random_blocks": "random block choices, ratio 1.0",
    "random_channels": "every block choice_3, random channel ratios",
    "block_search": "evolution over blocks, ratio 1.0",
    "channel_search": "evolution over channel ratios, every block choice_3",
    "block_channel_search": "evolution over blocks and channels (best of evolution and random search)",
}
SEARCHES = {"block_search": ["--fix_channel_ratio=1.0", "--norandom_search"],
            "channel_search": ["--fix_block=3", "--norandom_search"],
            "block_channel_search": ["--random_search"]}
PAPER = {"all_choice_3": 73.4, "block_search": 74.3, "channel_search": 73.9, "block_channel_search": 74.7}
SEARCH_FILES = ["summary.json", "derived.json"]  # summary.json first: it marks a finished search
# how the rank stage's supernet top-1s were measured (a kept file measured otherwise is measured again)
RANK_EVALUATION = "workflows.search_spos.evaluation_arrays, seed 0 (the searches' recalibration and held-out images)"


def random_arch(space, row: str, seed: int, constraints) -> np.ndarray:
    """The ``random_*`` row's path for ``seed``: uniform draws with the other field fixed (``random_blocks``: ratio
    1.0; ``random_channels``: every block choice_3), until one meets the limit."""
    from search import spos as sp
    fixed = ({1: [float(r) for r in space.channel_ratios].index(1.0)} if row == "random_blocks"
             else {0: space.choices.index("3")})
    return sp.sample(space, np.random.default_rng([seed, 4]), constraints, max_tries=100_000, fixed=fixed)


def compare(x: dict, y: dict) -> dict | None:
    """Difference of mean top-1 (x − y), its SE from the two stds over seeds, and whether it exceeds 2 SE."""
    if x.get("top1_std") is None or y.get("top1_std") is None:
        return None
    d = x["top1_mean"] - y["top1_mean"]
    se = math.sqrt(x["top1_std"] ** 2 / len(x["top1"]) + y["top1_std"] ** 2 / len(y["top1"]))
    return {"diff": d, "se": se, "exceeds_2se": bool(abs(d) > 2 * se)}


def rank_archs(space, n: int) -> list[np.ndarray]:
    """``n`` paths spanning the space's MACs range (no limit): 4,000 uniform draws sorted by MACs, one at each of
    ``n`` evenly spaced quantiles (fixed draws: the same paths in every session)."""
    from search import spos as sp
    if n <= 0:
        return []
    draws = sp.uniform(space, np.random.default_rng(7), 4000)
    macs = np.array([sp.cost(space, d)["macs"] for d in draws])
    order = np.argsort(macs, kind="stable")
    return [draws[order[int(round(q * (len(order) - 1)))]] for q in np.linspace(0.0, 1.0, n)]


def supernet_top1(space, supernet_dir: str, archs: dict, dataset: str, train_limit: int, recal_images: int,
                  val_images: int) -> dict:
    """Top-1 of each path ``archs[name]`` on the trained supernet after BN recalibration — the searches' own
    criterion on the very arrays ``recipes.search_spos`` scored its candidates on (``evaluation_arrays``; seed 0)."""
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    from search.spos_net import build_supernet
    from search.spos_train import CandidateEvaluator, SposConfig, SposTrainer
    from workflows.search_spos import SearchSposConfig, evaluation_arrays
    config = SearchSposConfig(dataset=dataset, limit=train_limit, recal_images=recal_images, val_images=val_images,
                              seed=0)
    recal_x, val_x, val_y, _ = evaluation_arrays(config, 32)
    model = build_supernet(space, seed=0)
    trainer = SposTrainer(model, SposConfig(), checkpoint_dir=os.path.join(supernet_dir, "supernet"))
    if not trainer.restore():
        raise RuntimeError(f"no trained supernet in {supernet_dir}")
    evaluator = CandidateEvaluator(model, recal_x, val_x, val_y, config.eval_batch)
    return {name: float(evaluator(arch)) for name, arch in archs.items()}


def kendall(x, y, resamples: int = 2000) -> dict:
    """Kendall τ-b of ``x`` vs ``y`` with a 95% percentile-bootstrap interval over the paths (resampled with
    replacement; resamples where τ is undefined — all values tied — are left out, and with none left the interval is
    None), and Spearman ρ; τ and ρ are None when either side is constant."""
    import warnings

    from scipy.stats import kendalltau, spearmanr
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng, taus = np.random.default_rng(0), []
    with warnings.catch_warnings():  # a constant resample: τ undefined, left out
        warnings.simplefilter("ignore")
        for _ in range(resamples):
            i = rng.integers(len(x), size=len(x))
            t = kendalltau(x[i], y[i]).statistic
            if np.isfinite(t):
                taus.append(t)
        tau, rho = kendalltau(x, y).statistic, spearmanr(x, y).statistic
    ci = [float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))] if taus else None
    finite = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731 — JSON has no NaN
    return {"kendall_tau": finite(tau), "ci95": ci, "spearman": finite(rho), "n_paths": len(x),
            "bootstrap_resamples": len(taus)}


def plot(rows: dict, limit: float, path: str) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (name, row), colour in zip(rows.items(), plt.get_cmap("tab10").colors):
        err = row["top1_std"] if row["top1_std"] is not None else 0.0
        ax.errorbar(np.mean(row["macs"]) / 1e6, 100 * row["top1_mean"], yerr=100 * err, marker="o", capsize=3,
                    color=colour, label=f"{name} ({len(row['top1'])} seeds)")
    ax.axvline(limit / 1e6, color="k", linestyle=":", linewidth=1, label="MACs limit")
    ax.set(title="SPOS Table 4 at CIFAR scale: retrained top-1 (mean ± std over seeds)", xlabel="MACs (M)",
           ylabel="top-1 (%), 5,000 test images")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def tau_text(stats: dict) -> str:
    ci = stats["ci95"]
    tau = "undefined" if stats["kendall_tau"] is None else f"{stats['kendall_tau']:.2f}"
    return (f"{tau} (95% CI " + (f"{ci[0]:.2f} to {ci[1]:.2f}" if ci else "undefined")
            + f", {stats['n_paths']} paths)")


def plot_rank(one_shot: dict, path: str) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    p = one_shot["paths"]
    sc = ax.scatter([100 * x["supernet_top1"] for x in p], [100 * x["retrained_top1_mean"] for x in p],
                    c=[x["macs"] / 1e6 for x in p], cmap="viridis")
    fig.colorbar(sc, ax=ax, label="MACs (M)")
    within = f"\nwithin the MACs limit: {tau_text(one_shot['within_limit'])}" if "within_limit" in one_shot else ""
    ax.set(title=f"One-shot assumption: Kendall τ {tau_text(one_shot)}{within}",
           xlabel="supernet top-1 (%), BN recalibrated", ylabel="retrained top-1 (%), 5,000 test images")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = harness.ArgumentParser(prog="spos_ablation", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--work_dir", default="runs/spos_ablation")
    p.add_argument("--ledger", default=LEDGER, help="committed folder of finished stages ('' for none)")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--depth", default="2,2,2,2",
                   help="blocks per stage (the paper's 4,4,8,4 supernet does not learn at this budget: "
                        "benchmarks/spos_trainability.py)")
    p.add_argument("--channel_ratios", default=PAPER_RATIOS)
    p.add_argument("--train_limit", type=int, default=10000, help="training images of supernet and retraining")
    p.add_argument("--supernet_epochs", type=int, default=20)
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--recal_images", type=int, default=512)
    p.add_argument("--val_images", type=int, default=1000)
    p.add_argument("--retrain_epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--latency_rounds", type=int, default=5)
    p.add_argument("--rank_paths", type=int, default=6,
                   help="extra paths across the MACs range, retrained with the first seed, for the one-shot rank "
                        "correlation (besides every row's paths)")
    a = p.parse_args(argv)
    prog = "spos_ablation"
    rows = [r for r in a.rows.split(",") if r]
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s]
        depth = tuple(int(d) for d in a.depth.split(","))
        ratios = tuple(float(r) for r in a.channel_ratios.split(","))
    except ValueError as e:
        print(f"{prog}: --seeds, --depth: integers; --channel_ratios: numbers ({e})", file=sys.stderr)
        return 2
    if not rows or any(r not in ROWS for r in rows) or not seeds:
        print(f"{prog}: --rows: comma-separated of {','.join(ROWS)}; --seeds: at least one", file=sys.stderr)
        return 2
    if a.rank_paths < 0:
        print(f"{prog}: --rank_paths={a.rank_paths}: must be ≥ 0", file=sys.stderr)
        return 2
    if 1.0 not in ratios:
        print(f"{prog}: --channel_ratios={a.channel_ratios}: must hold 1.0 (the all-choice_3 network)",
              file=sys.stderr)
        return 2
    from inputs.classification import known_classes
    try:
        classes = known_classes(a.dataset)
    except Exception as e:  # noqa: BLE001 — a missing folder etc.: one line
        print(f"{prog}: --dataset={a.dataset}: {e}", file=sys.stderr)
        return 2
    if classes is None:
        print(f"{prog}: --dataset={a.dataset}: shapes, folder:PATH or tsv:PATH", file=sys.stderr)
        return 2
    from common.io import write_text
    from models import spec as spec_lib
    from models.counting import count
    from recipes import cli
    from search import spos as sp
    space = sp.cifar_space(a.width, depth, classes, ratios)
    c3, r1 = space.choices.index("3"), ratios.index(1.0)
    choice3 = np.zeros((space.n_blocks, 3), np.int32)
    choice3[:, 0], choice3[:, 1] = c3, r1
    limit = sp.cost(space, choice3)["macs"]
    constraints = sp.Constraints(max_macs=limit)
    os.makedirs(os.path.join(a.work_dir, "logs"), exist_ok=True)
    try:
        ledger = harness.Ledger(a.ledger or None, a.work_dir, setup={
            k: getattr(a, k) for k in ("dataset", "width", "depth", "channel_ratios", "train_limit",
                                       "supernet_epochs", "population", "iterations", "recal_images", "val_images",
                                       "retrain_epochs", "lr", "rank_paths")})
    except ValueError as e:
        print(f"{prog}: --ledger: {e}", file=sys.stderr)
        return 2
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), StageTimes.previous(a.out))
    log = lambda name: os.path.join(a.work_dir, "logs", f"{name}.log")  # noqa: E731
    spos_args = [f"--dataset={a.dataset}", f"--width={a.width}", f"--depth={a.depth}",
                 f"--channel_ratios={a.channel_ratios}", f"--max_macs={limit}", f"--epochs={a.supernet_epochs}",
                 f"--limit={a.train_limit}", "--seed=0", "--noprogress"]
    supernet_dir = os.path.join(a.work_dir, "supernet")
    t0 = time.time()

    def ensure_supernet():
        if not os.path.exists(os.path.join(supernet_dir, "summary.json")):
            seconds.record("supernet", cli.run_stage("supernet", ["recipes.search_spos", "--phase=supernet",
                                                              *spos_args, f"--out_dir={supernet_dir}"],
                                                 log("supernet")))

    # --- the three searches on one supernet ------------------------------------------------------------------------
    specs, searches, archs = {}, {}, {}
    for row in [r for r in rows if r in SEARCHES]:
        sdir = os.path.join(a.work_dir, "search", row)
        ledger.restore(sdir, SEARCH_FILES)
        if not os.path.exists(os.path.join(sdir, "summary.json")):
            ensure_supernet()
            os.makedirs(sdir, exist_ok=True)  # the search reads the supernet's checkpoints through a link
            link = os.path.join(sdir, "supernet")
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(supernet_dir, "supernet")), link)
            shutil.copyfile(os.path.join(supernet_dir, "supernet_settings.json"),
                            os.path.join(sdir, "supernet_settings.json"))
            seconds.record(f"search_{row}", cli.run_stage(row, [
                "recipes.search_spos", "--phase=evolution", *spos_args, *SEARCHES[row],
                f"--population={a.population}", f"--iterations={a.iterations}", f"--top_k={max(2, a.population // 4)}",
                f"--recal_images={a.recal_images}", f"--val_images={a.val_images}", f"--name=spos_{row}",
                f"--out_dir={sdir}"], log(f"search_{row}")))
        ledger.keep(sdir, SEARCH_FILES)
        with open(os.path.join(sdir, "summary.json")) as f:
            summary = json.load(f)
        searches[row] = {"best": summary["best"], "supernet_top1": summary["best_acc"],
                         "derived_from": summary["derived_from"],
                         "evolution": {k: {"best_acc": v["best_acc"], "evaluated": v["evaluated"]}
                                       for k, v in summary["evolution"].items()}}
        specs.update({(row, s): os.path.join(sdir, "derived.json") for s in seeds})
        archs.update({(row, s): sp.from_key(summary["best"]) for s in seeds})

    # --- the rows without search -------------------------------------------------------------------------------
    spec_dir = os.path.join(a.work_dir, "specs")
    os.makedirs(spec_dir, exist_ok=True)
    for row in [r for r in rows if r not in SEARCHES]:
        for s in seeds:
            arch = choice3 if row == "all_choice_3" else random_arch(space, row, s, constraints)
            path = os.path.join(spec_dir, f"{row}_s{s}.json")
            write_text(path, spec_lib.dumps(sp.arch_spec(space, arch, name=f"spos_{row}_s{s}")))
            specs[(row, s)] = path
            archs[(row, s)] = arch

    # --- retraining ----------------------------------------------------------------------------------------------
    table = {}
    for row in rows:
        entry = {"what": ROWS[row], "seeds": seeds, "top1": [], "macs": [], "params": [], "specs": []}
        for s in seeds:
            spec = spec_lib.loads(open(specs[(row, s)], "rb").read())
            c = count(spec)
            entry["macs"].append(c.macs)
            entry["params"].append(c.params)
            entry["specs"].append(specs[(row, s)])
            entry["top1"].append(harness.train_top1(f"train_{row}_s{s}", specs[(row, s)],
                                            os.path.join(a.work_dir, "train", f"{row}_s{s}"),
                                            log(f"train_{row}_s{s}"), seconds, a.dataset, a.retrain_epochs, 128,
                                            a.lr, s, a.train_limit, ledger=ledger))
        entry["top1_mean"] = float(np.mean(entry["top1"]))
        entry["top1_std"] = float(np.std(entry["top1"], ddof=1)) if len(seeds) > 1 else None
        if row in searches:
            entry["search"] = searches[row]
        if row in PAPER:
            entry["paper_imagenet_top1"] = PAPER[row]
        table[row] = entry

    # --- the one-shot assumption: supernet top-1 vs retrained top-1 over every distinct path ----------------------
    paths = {}
    for row, entry in table.items():
        for s, top1, macs in zip(seeds, entry["top1"], entry["macs"]):
            k = sp.key(archs[(row, s)])
            paths.setdefault(k, {"name": f"{row}_s{s}", "arch": k, "macs": macs, "retrained_top1": []})
            paths[k]["retrained_top1"].append(top1)
    for i, arch in enumerate(rank_archs(space, a.rank_paths)):
        path = os.path.join(spec_dir, f"rank{i}.json")
        spec = sp.arch_spec(space, arch, name=f"spos_rank{i}")
        write_text(path, spec_lib.dumps(spec))
        stage = f"rank{i}_s{seeds[0]}"
        top1 = harness.train_top1(f"train_{stage}", path, os.path.join(a.work_dir, "train", stage),
                                  log(f"train_{stage}"), seconds, a.dataset, a.retrain_epochs, 128, a.lr, seeds[0],
                                  a.train_limit, ledger=ledger)
        paths.setdefault(sp.key(arch), {"name": f"rank{i}", "arch": sp.key(arch), "macs": count(spec).macs,
                                        "retrained_top1": []})["retrained_top1"].append(top1)
    rank_dir = os.path.join(a.work_dir, "rank")
    rank_file = os.path.join(rank_dir, "supernet_top1.json")
    ledger.restore(rank_dir, ["supernet_top1.json"])
    measured = {}
    if os.path.exists(rank_file):
        with open(rank_file) as f:
            kept = json.load(f)
        if kept.get("evaluation") == RANK_EVALUATION:  # measured as now (earlier files: other images)
            measured = kept["top1"]
    missing = {k: sp.from_key(k) for k in paths if k not in measured}
    if missing:
        ensure_supernet()
        t1 = time.time()
        measured.update(supernet_top1(space, supernet_dir, missing, a.dataset, a.train_limit, a.recal_images,
                                      a.val_images))
        seconds.record("supernet_top1", time.time() - t1)
        os.makedirs(rank_dir, exist_ok=True)
        write_json(rank_file, {"evaluation": RANK_EVALUATION, "top1": measured})
        ledger.keep(rank_dir, ["supernet_top1.json"])
    for k, p in paths.items():
        p["supernet_top1"] = measured[k]
        p["retrained_top1_mean"] = float(np.mean(p["retrained_top1"]))
    ranked = list(paths.values())
    one_shot = {"paths": ranked, "what": "every distinct retrained path: supernet top-1 (BN recalibrated, the "
                                        "searches' held-out training images) vs retrained top-1 (mean over its "
                                        "seeds, test images)",
                # the searched rows' best_acc and this stage's measure of the same path: equal when both scored it
                # on the same supernet with the same images
                "search_best_acc_check": {row: {"search": searches[row]["supernet_top1"],
                                                "rank_stage": measured[sp.key(archs[(row, seeds[0])])]}
                                          for row in searches}}
    if len(ranked) >= 3:
        one_shot.update(kendall([p["supernet_top1"] for p in ranked], [p["retrained_top1_mean"] for p in ranked]))
    within = [p for p in ranked if p["macs"] <= limit]
    if len(within) >= 3:  # the region the searches rank (the supernet was trained on paths under the limit)
        one_shot["within_limit"] = kendall([p["supernet_top1"] for p in within],
                                           [p["retrained_top1_mean"] for p in within])

    # --- latency: every distinct network in one session -----------------------------------------------------------
    distinct = {}
    for row, entry in table.items():
        for s, path in zip(seeds, entry["specs"]):
            distinct.setdefault(path, f"{row}_s{s}")
    if a.latency_rounds:
        t1 = time.time()
        lat = harness.litert_latency_ms({n: spec_lib.loads(open(p, "rb").read()) for p, n in distinct.items()},
                                a.latency_rounds)
        seconds.record("latency", time.time() - t1)
        for entry in table.values():
            entry["latency_ms"] = [lat[distinct[p]] for p in entry["specs"]]
    comparisons = {}
    base = table.get("all_choice_3")
    for row, entry in table.items():
        if base is not None and row != "all_choice_3":
            comparisons[f"{row}_minus_all_choice_3"] = compare(entry, base)
    if "block_channel_search" in table and "block_search" in table:
        comparisons["block_channel_search_minus_block_search"] = compare(table["block_channel_search"],
                                                                         table["block_search"])
    result = {
        "setup": {"space": f"search.spos.cifar_space(width={a.width}, depth={depth})", "choices": list(space.choices),
                  "channel_ratios": list(ratios), "max_macs": limit, "max_macs_is": "MACs of all_choice_3",
                  "dataset": a.dataset, "train_limit": a.train_limit,
                  "supernet": f"{a.supernet_epochs} epochs, constraint sampling under max_macs, holdout 0.2",
                  "search": f"evolution P={a.population} T={a.iterations}, BN recalibrated on {a.recal_images} "
                            f"images, {a.val_images} held-out images",
                  "retrain": f"recipes.train from scratch, {a.retrain_epochs} epochs, SGD momentum 0.9, lr {a.lr}, "
                             "batch 128, 1 warm-up epoch, cosine", "seeds": seeds, "test_images": 5000,
                  "latency": "LiteRT float32, 1 thread, CPU time, one interleaved session", "rows": ROWS},
        "rows": table, "comparisons": comparisons, "one_shot_rank": one_shot, "stage_seconds": dict(seconds),
        "stages_run_now": seconds.ran,
        "host": host_info(), "wall_s": round(time.time() - t0, 1),
        "command": "python -m benchmarks.spos_ablation " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_json(a.out, round_floats(result))
    plot(table, limit, os.path.splitext(a.out)[0] + ".png")
    if "kendall_tau" in one_shot:
        plot_rank(one_shot, os.path.splitext(a.out)[0] + "_rank.png")
        print(f"one-shot rank: Kendall tau {tau_text(one_shot)}"
              + (f"; within the MACs limit {tau_text(one_shot['within_limit'])}" if "within_limit" in one_shot else ""),
              file=sys.stderr)
    for row, entry in table.items():
        std = "" if entry["top1_std"] is None else f" ± {100 * entry['top1_std']:.2f}"
        print(f"{row}: top-1 {100 * entry['top1_mean']:.2f}{std} % over {len(seeds)} seeds, "
              f"{np.mean(entry['macs']) / 1e6:.2f}M MACs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
