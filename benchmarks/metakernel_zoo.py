"""The meta-kernel search on all of CIFAR-10, and its model published in the zoo with weights and a model card.

Stages (each writes under ``--work_dir`` and is skipped when its output is present, so rerunning the command resumes;
the JSON and the plot are rewritten after every finished stage):

1. **search** at every ``--targets`` budget: ``recipes.search_metakernel --space=ablation`` on all 50,000 training
   images (α on a held-out 20% of them), candidates ``--candidates``. Reported per target: the argmax architecture's
   MACs against the target *before* the final projection (the issue's ±10% band), the share of filters the
   projection (a trim when the argmax misses by more than 3%) changes, E[MACs], the per-layer mixture and the argmax
   supernet's top-1 (BN re-estimated) on 1,000 test images.
2. **retrain** the model of the target declared by ``--publish_target`` (fixed before any test number exists) and
   every ``--baselines`` model (one kernel size everywhere, widths matched to the searched model's MACs ± 2%) from
   scratch on all training images with one schedule, every seed in ``--seeds``; top-1 on the 5,000 test images of
   ``../shared/data/cifar10`` (mean ± std over seeds, and the difference to each baseline with its standard error).
3. **latency**: median single-thread LiteRT latency (float32) of every retrained spec, interleaved rounds.
4. **publish** (``--zoo_dir``, default the repository's ``zoo/``): the searched spec renamed to ``--name``, the
   first seed's weights (the seed is fixed in advance, not picked on test) as ``<name>-cifar10.npz``, and the model
   card ``<name>-cifar10.json`` (data, schedule, seeds, top-1 of the shipped weights and mean ± std over seeds, MACs,
   params, latency, the search that produced the spec); then ``recipes.evaluate --model=<name> --weights=cifar10``
   re-scores the shipped weights through the zoo and must reproduce the card's top-1.

``--method=ednas`` runs the same protocol for E-DNAS (García López et al.): ``recipes.search_ednas`` (feedback pair
on, the per-filter latency-table loss of ``--latency_table``, fitted on this space by ``benchmarks.ednas_latency
--space=ablation``) with ``--targets`` in milliseconds (default: the table's latency of the meta-kernel search's
reference network, every filter 7×7 at expansion 3 — half the filters of the expansion-6 supernet, all 7×7 — so both
searches are budgeted by the same network, one in MACs, one in latency); its baselines (``L_k<k>``) are matched to
the searched model's measured LiteRT latency (``--baseline_match=latency``: bisection on the expansion scale, each
candidate timed beside the searched model, ± ``--latency_tol``), so the card compares accuracy at equal measured
latency.

    python -m benchmarks.metakernel_zoo --out benchmarks/results/metakernel_zoo.json
    python -m benchmarks.metakernel_zoo --out … --stop_after=search       # the two searches only (a stage)
    python -m benchmarks.metakernel_zoo --method=ednas --name=ednas_cifar10 --work_dir=runs/ednas_zoo \
        --out benchmarks/results/ednas_zoo.json
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, usage_error, write_json

DATA = "folder:../shared/data/cifar10"
REPO_ZOO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoo")
STAGES = ("search", "retrain", "latency", "publish")
ABLATION_TABLE = os.path.join("benchmarks", "results", "ednas_latency_ablation_table.json")


def _load(path):
    with open(path) as f:
        return json.load(f)


def parse(argv):
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path (a PNG is written beside it)")
    p.add_argument("--method", default="metakernel", choices=["metakernel", "ednas"],
                   help="metakernel: FLOPs loss, --targets in MACs; ednas: feedback pair and latency-table loss, "
                        "--targets in ms")
    p.add_argument("--latency_table", default=ABLATION_TABLE, help="--method=ednas: the space's per-filter table")
    p.add_argument("--work_dir", default="runs/metakernel_zoo", help="searches, specs, trainings, logs")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--candidates", default="3,5,7", help="kernel sizes of the search (odd, ascending)")
    p.add_argument("--targets", default=None,
                   help="budgets of the searches: MACs (default: the Fig. 4 budget, every kernel 7x7 at expansion 3, "
                        "and 4.5M) or, --method=ednas, ms (default: the table's latency of that every-7x7 network)")
    p.add_argument("--publish_target", type=int, default=0, help="index in --targets of the model to publish")
    p.add_argument("--search_epochs", type=int, default=4)
    p.add_argument("--search_limit", type=int, default=0,
                   help="images of a search's weight split (0: all; α gets a held-out 20%% of the training images)")
    p.add_argument("--search_flags", default="", help="extra comma-separated flags of recipes.search_metakernel")
    p.add_argument("--baselines", default="3",
                   help="comma-separated kernel sizes: one-size baselines (A) matched to the searched MACs; '' none")
    p.add_argument("--seeds", default="0,1,2", help="retraining seeds; the first one's weights are published")
    p.add_argument("--epochs", type=int, default=10, help="retraining epochs (1 warm-up, cosine)")
    p.add_argument("--train_limit", type=int, default=0, help="training images per retraining (0: all)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2, help="SGD peak learning rate (momentum 0.9)")
    p.add_argument("--tol", type=float, default=0.02, help="relative MACs tolerance of the baselines")
    p.add_argument("--baseline_match", default=None, choices=["macs", "latency"],
                   help="what the baselines are matched on: the searched model's MACs (± --tol; default of "
                        "--method=metakernel) or its measured LiteRT latency (± --latency_tol, bisection on measured "
                        "single-thread CPU time; default of --method=ednas, whose budget is a latency)")
    p.add_argument("--latency_tol", type=float, default=0.03, help="relative latency tolerance of the baselines")
    p.add_argument("--latency_rounds", type=int, default=5, help="interleaved LiteRT timing rounds")
    p.add_argument("--compare", default="",
                   help="comma-separated published zoo models (cifar10 cards) timed in the same latency session and "
                        "reported beside, with their cards' top-1 (e.g. metakernel_cifar10_3m for --method=ednas)")
    p.add_argument("--name", default="metakernel_cifar10_3m", help="zoo name of the published model")
    p.add_argument("--zoo_dir", default=REPO_ZOO, help="zoo directory to publish into (specs/, weights/)")
    p.add_argument("--stop_after", default="publish", choices=STAGES, help="last stage to run")
    a = p.parse_args(argv)

    def fail(msg):
        usage_error("metakernel_zoo", msg)
    try:
        a.candidates = [int(k) for k in a.candidates.split(",") if k]
        a.targets = [float(t) for t in a.targets.split(",") if t] if a.targets is not None else None
        a.baselines = [int(k) for k in a.baselines.split(",") if k]
        a.seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError as e:
        fail(f"--candidates/--targets/--baselines/--seeds: comma-separated numbers ({e})")
    if len(a.candidates) < 2 or any(k < 1 or k % 2 == 0 for k in a.candidates) or a.candidates != sorted(
            set(a.candidates)):
        fail(f"--candidates={','.join(map(str, a.candidates))}: at least two odd kernel sizes, ascending")
    if any(k < 1 or k % 2 == 0 for k in a.baselines):
        fail(f"--baselines={','.join(map(str, a.baselines))}: odd kernel sizes")
    from search.metakernel_space import ablation_space
    from workflows.search_metakernel import ABLATION_EXPAND
    if a.method == "ednas":
        from search import kernel_latency as kl
        try:
            a.table = kl.KernelLatency.load(a.latency_table)
        except (OSError, ValueError) as e:
            fail(f"--latency_table={a.latency_table}: {e} (build it: python -m benchmarks.ednas_latency "
                 "--space=ablation --out … --model_out …)")
        space = ablation_space(tuple(a.candidates), ABLATION_EXPAND)
        try:
            a.table.check(space)
        except ValueError as e:
            fail(f"--latency_table={a.latency_table}: {e}")
        if a.targets is None:
            a.targets = [a.table.predict(space, reference_arch(space, max(a.candidates)))]
    elif a.targets is None:
        a.targets = [3370624.0, 4500000.0]
    if not a.targets or any(t <= 0 for t in a.targets):
        fail("--targets: at least one positive budget")
    if not 0 <= a.publish_target < len(a.targets):
        fail(f"--publish_target={a.publish_target}: an index into the {len(a.targets)} --targets")
    if not a.seeds:
        fail("--seeds: at least one seed")
    a.baseline_match = a.baseline_match or ("latency" if a.method == "ednas" else "macs")
    if not 0 < a.latency_tol < 0.5:
        fail(f"--latency_tol={a.latency_tol}: in (0, 0.5)")
    if a.epochs < 2 or a.search_epochs < 2 or a.train_limit < 0 or a.search_limit < 0 or not 0 < a.tol < 0.5 \
            or a.latency_rounds < 1 or a.batch_size < 1:
        fail("--epochs and --search_epochs ≥ 2 (one warm-up epoch), --train_limit/--search_limit ≥ 0, --tol in "
             "(0, 0.5), --latency_rounds and --batch_size ≥ 1")
    if not a.name.replace("_", "").isalnum() or not a.name[0].isalpha():
        fail(f"--name={a.name!r}: letters, digits and '_', starting with a letter")
    if a.dataset.startswith("folder:") and not os.path.isdir(a.dataset[7:]):
        fail(f"--dataset={a.dataset}: no such directory")
    if not os.path.isdir(a.zoo_dir):
        fail(f"--zoo_dir={a.zoo_dir}: no such directory")
    a.compare = [c for c in a.compare.split(",") if c]
    for c in a.compare:
        if not os.path.isfile(os.path.join(REPO_ZOO, "weights", f"{c}-cifar10.json")):
            fail(f"--compare={c}: no published zoo model with a cifar10 card (zoo/weights/{c}-cifar10.json)")
    if a.method == "ednas":
        lo, hi = a.table.reach(space)
        unit = "ms"
    else:
        lo, hi = ablation_space(tuple(a.candidates), ABLATION_EXPAND).macs_range()
        unit = "MACs"
    for t in a.targets:
        if not lo < t < hi:
            fmt = "{:,.0f}" if unit == "MACs" else "{:.4g}"
            fail(f"--targets: {fmt.format(t)} is outside the search space's {fmt.format(lo)} … {fmt.format(hi)} "
                 f"{unit}")
    return a


def reference_arch(space, k: int) -> list:
    """The FLOPs search's reference network inside the expansion-6 supernet: every block's first half of filters at
    k×k and the rest pruned, i.e. every filter k×k at expansion 3 (the Fig. 4 budget network)."""
    from search.kernel_latency import prunable
    i = list(space.candidates).index(k)
    arch = []
    for slot in space.blocks():
        if not prunable(slot):
            raise ValueError(f"{slot.name}: the reference network needs every block expanded (ablation_space)")
        c = np.zeros(slot.expand, np.int64)
        c[:slot.expand // 2] = i + 1
        arch.append(c)
    return arch


def latency_matched(searched, k: int, tol: float, name: str, rounds: int = 5) -> tuple:
    """The one-size (k×k) ablation-space network whose measured LiteRT latency (float32, one thread, the calling
    thread's CPU time; each candidate timed with the searched model in one session) is within ``tol`` of the searched
    model's: bisection on the expansion scale. Returns ``(spec, info)``."""
    import keras

    from benchmarks.harness import litert_latency
    from models.builder import build
    from models.counting import count
    from search.metakernel_space import ablation_space
    from search.tflite_timing import to_tflite
    tried = []
    keras.backend.clear_session()
    searched_tflite = to_tflite(build(searched))

    def ratio(spec):  # candidate / searched, both timed in one session: host drift cancels
        t = litert_latency({"searched": searched_tflite, "candidate": spec}, rounds=rounds)
        r = t["candidate"]["median_ms"] / t["searched"]["median_ms"]
        tried.append({"macs": count(spec).macs, "candidate_ms": t["candidate"]["median_ms"],
                      "searched_ms": t["searched"]["median_ms"], "ratio": r})
        return r

    spec, scale = ablation_space(expand=3).matched((k,), "uniform", 1.0, tol, name=name, cost=ratio, iters=14,
                                                   unit="× the searched model's latency")
    return spec, {"expand_scale": scale, "tol": tol, "clock": "cpu", "ratio": tried[-1]["ratio"], "tried": tried}


def _tag(t: float) -> str:
    return f"T{t:.0f}" if t >= 1000 else "T" + f"{t:.4f}ms".replace(".", "p")


def search_args(a, target: float, out_dir: str) -> list[str]:
    budget = (["recipes.search_ednas", f"--latency_table={a.latency_table}", f"--target_ms={target:.6g}"]
              if a.method == "ednas" else ["recipes.search_metakernel", f"--target_macs={target:.0f}"])
    return [budget[0], "--space=ablation", f"--dataset={a.dataset}",
            f"--candidates={','.join(map(str, a.candidates))}", *budget[1:],
            f"--epochs={a.search_epochs}", *([f"--limit={a.search_limit}"] if a.search_limit else []),
            "--batch_size=64", "--seed=0", f"--name=searched_{_tag(target).lower()}", "--noprogress",
            f"--out_dir={out_dir}", *[f for f in a.search_flags.split(",") if f]]


def train_args(a, spec: str, seed: int, out_dir: str) -> list[str]:
    return ["recipes.train", f"--model={spec}", "--weights=", f"--dataset={a.dataset}", f"--epochs={a.epochs}",
            f"--batch_size={a.batch_size}", "--optimizer=sgd", f"--lr={a.lr}", "--warmup_epochs=1",
            f"--seed={seed}", f"--val_freq={a.epochs}", "--noprogress", f"--out_dir={out_dir}",
            *([f"--limit={a.train_limit}"] if a.train_limit else [])]


def summarize_search(s: dict) -> dict:
    keys = ("target_macs", "macs", "macs_vs_target", "argmax_macs", "argmax_vs_target", "expected_macs",
            "projection_moves", "projection_filters_changed", "projection_moved_share", "argmax_val_acc", "params")
    row = {k: s.get(k) for k in keys}
    if s.get("target_ms") is not None:  # E-DNAS: the budget is in milliseconds of the latency table
        row.update({k: s.get(k) for k in ("target_ms", "table_ms", "expected_ms", "argmax_ms", "latency_table")})
        row["argmax_vs_target"] = s["argmax_ms"] / s["target_ms"] - 1
        row["budget"] = {"unit": "ms", "target": s["target_ms"], "argmax": s["argmax_ms"],
                         "expected": s["expected_ms"], "final": s["table_ms"]}
    else:
        row["budget"] = {"unit": "MACs", "target": s["target_macs"], "argmax": s["argmax_macs"],
                         "expected": s["expected_macs"], "final": s["macs"]}
    mix = s["mixture"]
    row["mixed_layers"] = f"{mix['mixed_layers']}/{mix['layers']}"
    row["argmax_within_10pct"] = abs(row["argmax_vs_target"]) <= 0.10
    return row


def stats(top1: list[float]) -> dict:
    out = {"top1_per_seed": top1, "top1_mean": float(np.mean(top1))}
    out["top1_std"] = float(np.std(top1, ddof=1)) if len(top1) > 1 else None
    return out


def diff(r: dict, b: dict) -> dict | None:
    if r.get("top1_std") is None or b.get("top1_std") is None:
        return None
    se = float(np.sqrt(r["top1_std"] ** 2 / len(r["top1_per_seed"]) + b["top1_std"] ** 2 / len(b["top1_per_seed"])))
    d = r["top1_mean"] - b["top1_mean"]
    return {"diff": d, "se": se, "exceeds_2se": abs(d) > 2 * se}


def plot(result: dict, path: str) -> None:
    """Left: every search's argmax cost (MACs or table ms; E[cost], the final spec) against its target, with the
    ±10% band. Right: top-1 of the retrained models, one dot per seed, mean ± std."""
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    searches = result["searches"]
    ordered = sorted(searches.values(), key=lambda s: s["budget"]["target"])
    unit = ordered[0]["budget"]["unit"]
    div, fmt = (1e6, "{:.2f}M") if unit == "MACs" else (1.0, "{:.3f} ms")
    for i, s in enumerate(ordered):
        b = {k: v / div for k, v in s["budget"].items() if k != "unit"}
        t = b["target"]
        ax_s.add_patch(plt.Rectangle((i - 0.4, 0.9 * t), 0.8, 0.2 * t, color="grey", alpha=0.2,
                                     label="target ± 10%" if i == 0 else None))
        ax_s.plot([i - 0.4, i + 0.4], [t, t], color="grey", lw=1)
        ax_s.plot(i - 0.15, b["argmax"], "r*", ms=12, label="argmax (no projection)" if i == 0 else None)
        ax_s.plot(i, b["expected"], "bo", label=f"E[{unit}]" if i == 0 else None)
        ax_s.plot(i + 0.15, b["final"], "ks", label="final spec (after the projection)" if i == 0 else None)
        ax_s.annotate(f"{100 * s['argmax_vs_target']:+.1f}%\n{s['projection_filters_changed']} filters moved",
                      (i, 1.12 * t), ha="center", fontsize=8)
    ax_s.set_xticks(range(len(ordered)))
    ax_s.set_xticklabels([("T = " + fmt).format(s["budget"]["target"] / div) for s in ordered])
    ax_s.set_ylabel("MACs (M)" if unit == "MACs" else "latency-table ms")
    ax_s.set_ylim(0, 1.3 * max(s["budget"]["target"] for s in ordered) / div)
    ax_s.set_title(("meta-kernel search" if unit == "MACs" else "E-DNAS search (latency-table loss, feedback)")
                   + " on all of CIFAR-10", fontsize=9)
    ax_s.legend(fontsize=7, loc="lower right")
    models = result.get("models", {})
    for i, (name, m) in enumerate(models.items()):
        if "top1_per_seed" not in m:
            continue
        y = [100 * v for v in m["top1_per_seed"]]
        color = "tab:red" if m["group"] == "searched" else "tab:grey"
        ax_t.plot([i] * len(y), y, "o", color=color, alpha=0.5)
        ax_t.errorbar(i + 0.15, np.mean(y), yerr=np.std(y, ddof=1) if len(y) > 1 else 0, fmt="_", color=color,
                      ms=14, capsize=4)
    if models:
        ax_t.set_xticks(range(len(models)))
        ax_t.set_xticklabels([f"{n}\n{m['macs'] / 1e6:.2f}M MACs" for n, m in models.items()], fontsize=8)
        ax_t.set_xlim(-0.5, len(models) - 0.5)
    ax_t.set_ylabel("top-1 on the 5,000 test images (%)")
    ax_t.set_title(f"retrained, {result['setup']['epochs']} epochs, seeds {result['setup']['seeds']}", fontsize=9)
    for ax in (ax_s, ax_t):
        ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def write_zoo(a, spec_file: str, card: dict, weights_file: str) -> dict:
    """Writes ``specs/<name>.json``, ``weights/<name>-cifar10.npz`` and its card into ``--zoo_dir``."""
    import dataclasses

    from common.io import write_text
    from models import spec as spec_lib
    from models.weights import sha256
    with open(spec_file) as f:
        spec = dataclasses.replace(spec_lib.loads(f.read()), name=a.name)
    os.makedirs(os.path.join(a.zoo_dir, "weights"), exist_ok=True)
    npz = os.path.join(a.zoo_dir, "weights", f"{a.name}-cifar10.npz")
    tmp = npz + ".tmp"
    shutil.copyfile(weights_file, tmp)
    os.replace(tmp, npz)
    card = {"model": a.name, "tag": "cifar10", "file": os.path.basename(npz), "sha256": sha256(npz), **card}
    write_text(os.path.join(a.zoo_dir, "specs", f"{a.name}.json"), spec_lib.dumps(spec))
    write_text(os.path.join(a.zoo_dir, "weights", f"{a.name}-cifar10.json"), json.dumps(round_floats(card), indent=1)
               + "\n")
    return card


def check_published(a, card: dict, logs: str, seconds: StageTimes) -> dict:
    """Re-scores the weights just published (``a.name``, ``a.zoo_dir``) with ``recipes.evaluate`` — through
    ``zoo.build``'s name and tag (sha256-checked) when ``a.zoo_dir`` is the repository's zoo — on ``a.dataset``; the
    card's top-1 (the training run's own test score) must come back to within one image."""
    from recipes.cli import run_stage
    check = os.path.join(a.work_dir, "zoo_evaluate.json")
    in_repo = os.path.abspath(a.zoo_dir) == REPO_ZOO
    spec_arg = a.name if in_repo else os.path.join(a.zoo_dir, "specs", f"{a.name}.json")
    weights_arg = "cifar10" if in_repo else os.path.join(a.zoo_dir, "weights", card["file"])
    eval_args = ["recipes.evaluate", f"--model={spec_arg}", f"--weights={weights_arg}", f"--dataset={a.dataset}",
                 f"--json={check}"]
    seconds.record("zoo_evaluate", run_stage("zoo_evaluate", eval_args, os.path.join(logs, "zoo_evaluate.log")))
    ev = _load(check)
    return {"name": a.name, "card": os.path.join(a.zoo_dir, "weights", f"{a.name}-cifar10.json"),
            "card_top1": card["metrics"]["top1"], "zoo_evaluate_top1": ev["top1"],
            "zoo_evaluate_examples": ev["examples"],
            "reproduced": abs(ev["top1"] - card["metrics"]["top1"]) <= 1.0 / ev["examples"] + 1e-9,
            "evaluate_command": "python -m " + " ".join(eval_args)}


def finish_published(prog: str, a, card: dict, m: dict, result: dict, logs: str, seconds: StageTimes,
                     report) -> int:
    """The zoo benchmarks' last stage: re-score the published weights (``check_published``) into
    ``result["published"]``, write the report, and say the outcome; 1 when the card's top-1 does not come back."""
    result["published"] = check_published(a, card, logs, seconds)
    report()
    if not result["published"]["reproduced"]:
        print(f"{prog}: the zoo weights score {result['published']['zoo_evaluate_top1']:.4f}, the card says "
              f"{card['metrics']['top1']:.4f}", file=sys.stderr)
        return 1
    print(f"{a.name}: top-1 {card['metrics']['top1']:.4f} (seed {a.seeds[0]}; {m['top1_mean']:.4f} ± "
          f"{m['top1_std'] or 0:.4f} over seeds {a.seeds}), {m['macs']:,} MACs, {m['params']:,} params -> "
          f"{result['published']['card']}")
    return 0


def main(argv=None) -> int:
    a = parse(argv)
    from models import spec as spec_lib
    from models.counting import count
    from recipes.cli import run_stage
    from search.metakernel_space import ablation_space

    logs = os.path.join(a.work_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    command = "python -m benchmarks.metakernel_zoo " + " ".join(sys.argv[1:] if argv is None else argv)
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), seed=StageTimes.previous(a.out))
    result = {"setup": {"method": a.method, "dataset": a.dataset, "candidates": a.candidates, "targets": a.targets,
                        "target_unit": "ms" if a.method == "ednas" else "MACs",
                        **({"latency_table": a.latency_table} if a.method == "ednas" else {}),
                        "publish_target": a.targets[a.publish_target], "search_epochs": a.search_epochs,
                        "search_limit": a.search_limit or "all (α on a held-out 20%)",
                        "search_flags": a.search_flags, "epochs": a.epochs, "batch_size": a.batch_size,
                        "train_limit": a.train_limit or "all", "seeds": a.seeds,
                        "optimizer": f"SGD momentum 0.9 (no Nesterov), lr {a.lr}, 1 warm-up epoch, cosine to 0, "
                                     "decoupled weight decay 4e-5 (recipes.train default), label smoothing 0.1",
                        "test_images": "the test split of --dataset (5,000 for ../shared/data/cifar10)"},
              "searches": {}, "models": {}, "stage_seconds": seconds, "stages_run_now": seconds.ran,
              "host": host_info(), "command": command}

    def report():
        write_json(a.out, round_floats(result))
        plot(result, os.path.splitext(a.out)[0] + ".png")

    # 1. searches
    for t in a.targets:
        out_dir = os.path.join(a.work_dir, "search", _tag(t))
        if not os.path.exists(os.path.join(out_dir, "summary.json")):
            seconds.record(f"search/{_tag(t)}", run_stage(_tag(t), search_args(a, t, out_dir),
                                                          os.path.join(logs, f"search_{_tag(t)}.log")))
        result["searches"][_tag(t)] = {**summarize_search(_load(os.path.join(out_dir, "summary.json"))),
                                       "command": "python -m " + " ".join(search_args(a, t, out_dir))}
        report()
    if a.stop_after == "search":
        return 0

    # 2. retraining: the published search's spec and the one-size baselines at its MACs or measured latency
    searched = os.path.join(a.work_dir, "search", _tag(a.targets[a.publish_target]), "derived.json")
    with open(searched) as f:
        searched_spec = spec_lib.loads(f.read())
    macs = count(searched_spec).macs
    specs = {"searched": searched}
    from common.io import write_text
    prefix = "A" if a.baseline_match == "macs" else "L"  # L: matched on latency
    match_path = os.path.join(a.work_dir, "specs", "baseline_matching.json")
    matching = _load(match_path) if os.path.exists(match_path) else {}
    for k in a.baselines:
        path = os.path.join(a.work_dir, "specs", f"{prefix}_k{k}.json")
        if not os.path.exists(path):
            try:
                if a.baseline_match == "macs":
                    spec, _ = ablation_space(expand=3).matched((k,), "uniform", float(macs), a.tol, name=f"a_k{k}")
                else:
                    t0 = time.time()
                    spec, info = latency_matched(searched_spec, k, a.latency_tol, name=f"l_k{k}",
                                                 rounds=a.latency_rounds)
                    seconds.record(f"match/{prefix}_k{k}", time.time() - t0)
                    matching[f"{prefix}_k{k}"] = info
            except ValueError as e:
                print(f"metakernel_zoo: baseline k={k} cannot be matched to the searched model's "
                      f"{'MACs' if a.baseline_match == 'macs' else 'latency'}: {e}", file=sys.stderr)
                return 2
            write_text(path, spec_lib.dumps(spec))  # the spec first: a matching record always has its spec
            if a.baseline_match == "latency":
                write_json(match_path, matching)
        specs[f"{prefix}_k{k}"] = path
    result["baseline_matching"] = {"on": a.baseline_match,
                                   **{b: m for b, m in matching.items() if b in specs}}
    cards = {}
    for name, path in specs.items():
        with open(path) as f:
            c = count(spec_lib.loads(f.read()))
        result["models"][name] = {"group": "searched" if name == "searched" else prefix, "spec": path, "macs": c.macs,
                                  "macs_vs_searched": c.macs / macs - 1, "params": c.params}
    for name, path in specs.items():  # every seed of the searched model first: it is the one to publish
        for seed in a.seeds:
            out_dir = os.path.join(a.work_dir, "train", f"{name}_s{seed}")
            card = os.path.join(out_dir, "model_card.json")
            if not os.path.exists(card):
                args, log = train_args(a, path, seed, out_dir), os.path.join(logs, f"train_{name}_s{seed}.log")
                seconds.record(f"train/{name}_s{seed}", run_stage(f"{name}_s{seed}", args, log))
            cards[(name, seed)] = _load(card)
            top1 = [cards[(name, s)]["metrics"]["val_top1"] for s in a.seeds if (name, s) in cards]
            result["models"][name].update(stats(top1))
            first = os.path.join(a.work_dir, "train", f"{name}_s{a.seeds[0]}")
            result["models"][name]["train_command"] = "python -m " + " ".join(train_args(a, path, a.seeds[0], first))
            result["searched_vs_baselines"] = {
                b: diff(result["models"]["searched"], m) for b, m in result["models"].items()
                if b != "searched" and "top1_per_seed" in m and "top1_per_seed" in result["models"]["searched"]}
            report()
    if a.stop_after == "retrain":
        return 0

    # 3. latency
    lat_path = os.path.join(a.work_dir, "latency.json")
    latency = _load(lat_path) if os.path.exists(lat_path) else {}
    compared = {f"zoo:{c}": os.path.join(REPO_ZOO, "specs", f"{c}.json") for c in a.compare}
    if set(specs) - set(latency) or set(compared) - set(latency):
        from benchmarks.kernel_ablation import measure_latency
        t0 = time.time()
        latency = measure_latency({**specs, **compared}, a.latency_rounds)
        seconds.record("latency", time.time() - t0)
        write_json(lat_path, latency)
    for name in specs:
        result["models"][name]["latency_ms"] = latency[name]
    if compared:  # published models of the same space, timed in this session; top-1 from their cards
        result["compared"] = {}
        for c in a.compare:
            m = _load(os.path.join(REPO_ZOO, "weights", f"{c}-cifar10.json"))["metrics"]
            result["compared"][c] = {"top1_mean": m["top1_mean_over_seeds"], "top1_std": m["top1_std_over_seeds"],
                                     "seeds": m["seeds"], "macs": m["macs"], "params": m["params"],
                                     "latency_ms": latency[f"zoo:{c}"]}
            if "top1_per_seed" in result["models"]["searched"]:
                result["compared"][c]["searched_minus_it"] = diff(
                    result["models"]["searched"], {"top1_mean": m["top1_mean_over_seeds"],
                                                  "top1_std": m["top1_std_over_seeds"],
                                                  "top1_per_seed": m["top1_per_seed"]})
    report()
    if a.stop_after == "latency":
        return 0

    # 4. publish the first seed's weights of the searched model, then re-score them through the zoo
    m, s = result["models"]["searched"], result["searches"][_tag(a.targets[a.publish_target])]
    shipped = cards[("searched", a.seeds[0])]
    lat = m["latency_ms"]
    card = {
        "dataset": f"CIFAR-10, 10 classes, 32x32 ({a.dataset}: trained on {shipped['data']['train_examples']:,} "
                   f"training images, scored on the {shipped['data']['val_examples']:,} images of its test split; "
                   "../shared/data/cifar10 holds 5,000 of the 10,000 CIFAR-10 test images)",
        "input_size": 32, "class_names": shipped.get("class_names"),
        "metrics": {"top1": shipped["metrics"]["val_top1"], "top5": shipped["metrics"].get("val_top5"),
                    "test_images": shipped["data"]["val_examples"],
                    # sampling error of a top-1 measured on this many images: what to expect on other test images
                    "top1_binomial_se": float(np.sqrt(shipped["metrics"]["val_top1"] * (1 - shipped["metrics"][
                        "val_top1"]) / shipped["data"]["val_examples"])),
                    "seed": a.seeds[0],
                    "top1_mean_over_seeds": m["top1_mean"], "top1_std_over_seeds": m["top1_std"],
                    "seeds": a.seeds, "top1_per_seed": m["top1_per_seed"],
                    "baselines_matched_on": {"macs": "MACs", "latency": "measured LiteRT latency"}[a.baseline_match],
                    "baselines": {b: {"top1_mean": result["models"][b]["top1_mean"],
                                      "top1_std": result["models"][b]["top1_std"], "macs": result["models"][b]["macs"],
                                      "latency_ms": result["models"][b]["latency_ms"]["median_ms"],
                                      **({"matched_latency_ratio_cpu_time": matching[b]["ratio"]}
                                         if b in matching else {}),
                                      **(result["searched_vs_baselines"].get(b) or {})}
                                  for b in specs if b != "searched" and "top1_mean" in result["models"][b]},
                    "macs": m["macs"], "params": m["params"],
                    **({"compared_published": result["compared"]} if result.get("compared") else {}),
                    "latency_ms_litert_fp32_1thread": {"median": lat["median_ms"], "p10": lat.get("p10_ms"),
                                                       "p90": lat.get("p90_ms"), "host": result["host"]}},
        "training": {"epochs": a.epochs, "batch_size": a.batch_size, "optimizer": result["setup"]["optimizer"],
                     "augmentation": "random crop (4-pixel pad) + horizontal flip (recipes.train --augment=standard)",
                     "command": m["train_command"]},
        "search": {**{k: s[k] for k in ("target_macs", "argmax_macs", "argmax_vs_target", "expected_macs",
                                        "projection_filters_changed", "projection_moved_share", "mixed_layers")},
                   **({k: s[k] for k in ("target_ms", "argmax_ms", "expected_ms", "table_ms", "latency_table")}
                      if a.method == "ednas" else {}),
                   "command": s["command"]},
        "produced_by": command,
        "source": "this repository: " + ("meta-kernel search (Chen et al. 2019)" if a.method == "metakernel" else
                                          "E-DNAS search (García López et al.: feedback meta-kernels, latency-table "
                                          "loss)")
                  + " in search.metakernel_space.ablation_space (MobileNetV1-style CIFAR net: ReLU inverted "
                    "residuals, every block expanded, no SE), retrained from scratch by recipes.train",
        "license": "Apache-2.0",
    }
    card = write_zoo(a, searched, card, os.path.join(a.work_dir, "train", f"searched_s{a.seeds[0]}", "weights.npz"))
    return finish_published("metakernel_zoo", a, card, m, result, logs, seconds, report)


if __name__ == "__main__":
    sys.exit(main())
