"""The best searched SPOS path of Table 4 published in the zoo with CIFAR-10 weights and a model card.

    python -m benchmarks.spos_zoo --out benchmarks/results/spos_zoo.json

The candidates are the paths the three Table-4 searches derived (``benchmarks.spos_ablation``: block search, channel
search, block + channel search — each already the best of evolution and random search by the supernet's criterion,
as its ``summary.json``'s ``derived_from`` records), read from ``--searches`` (default the committed ledger of that
benchmark). Which one to publish is decided without a test image:

1. **select**: every candidate is retrained once (the first of ``--seeds``) with the one schedule below on the
   training images minus a held-out validation split — the last ``--val_per_class`` files (sorted names) of every
   class folder, linked under ``<work_dir>/selection_data`` — and scored on that split; the best validation top-1
   is published. The supernet top-1 each search reported is recorded beside (the one-shot criterion; Table 4's
   Kendall τ of 0.17 says it barely ranks retrained paths, hence the retraining).
2. **retrain**: the selected path and ``all_choice_3`` (every block choice_3 at channel ratio 1.0: the network whose
   MACs are the searches' limit) from scratch on all training images, every seed of ``--seeds``: ``recipes.train``,
   SGD momentum 0.9, ``--lr``, one warm-up epoch, cosine, ``--epochs``, batch ``--batch_size``; top-1 on the test
   split (the 5,000 images of ``../shared/data/cifar10``), mean ± std, the difference with its standard error.
3. **latency**: LiteRT float32, one thread, the thread's CPU time (the latency tables' clock), both networks in one
   interleaved session.
4. **publish** (``--zoo_dir``, default the repository's ``zoo/``): the spec renamed ``--name``, the first seed's
   weights (fixed in advance, not picked on test) as ``<name>-cifar10.npz``, and its model card; then
   ``recipes.evaluate --model=<name> --weights=cifar10`` must reproduce the card's top-1.

Resumable: finished trainings are skipped (and mirrored into ``--ledger``, committed beside the result, so a later
session without the work directory resumes); a publication whose card names this very training and whose weights
match the card's sha256 is not redone.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, write_json
from benchmarks.metakernel_zoo import REPO_ZOO, diff, finish_published, stats, write_zoo

DATA = "folder:../shared/data/cifar10"
SEARCHES_DIR = os.path.join("benchmarks", "results", "spos_ablation_runs")
LEDGER = os.path.join("benchmarks", "results", "spos_zoo_runs")
CANDIDATES = ("block_search", "channel_search", "block_channel_search")
STAGES = ("select", "retrain", "latency", "publish")
PROG = "spos_zoo"


def _load(path):
    with open(path) as f:
        return json.load(f)


def parse(argv):
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path (a PNG is written beside it)")
    p.add_argument("--searches", default=SEARCHES_DIR,
                   help="spos_ablation's ledger or work directory: setup.json and search/<row>/{summary,derived}.json")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated searches to choose among")
    p.add_argument("--work_dir", default="runs/spos_zoo")
    p.add_argument("--ledger", default=LEDGER, help="committed folder of finished trainings ('' for none)")
    p.add_argument("--dataset", default=DATA, help="folder:PATH with train/ and test/ class folders")
    p.add_argument("--val_per_class", type=int, default=500,
                   help="validation images per class held out of the training images for the selection")
    p.add_argument("--seeds", default="0,1,2", help="retraining seeds; the first one's weights are published")
    p.add_argument("--epochs", type=int, default=10, help="retraining epochs (1 warm-up, cosine)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2, help="SGD peak learning rate (momentum 0.9)")
    p.add_argument("--latency_rounds", type=int, default=7, help="interleaved LiteRT timing rounds")
    p.add_argument("--name", default="spos_cifar10", help="zoo name of the published model")
    p.add_argument("--zoo_dir", default=REPO_ZOO, help="zoo directory to publish into (specs/, weights/)")
    p.add_argument("--stop_after", default="publish", choices=STAGES, help="last stage to run")
    a = p.parse_args(argv)

    def fail(msg):
        harness.usage_error(PROG, msg)
    try:
        a.seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError as e:
        fail(f"--seeds={a.seeds}: comma-separated integers ({e})")
    a.candidates = [c for c in a.candidates.split(",") if c]
    if not a.seeds or len(set(a.seeds)) != len(a.seeds):
        fail("--seeds: at least one seed, none twice")
    if not a.candidates or any(c not in CANDIDATES for c in a.candidates):
        fail(f"--candidates: comma-separated of {','.join(CANDIDATES)}")
    if a.epochs < 2 or a.batch_size < 1 or a.latency_rounds < 1 or a.val_per_class < 1 or not a.lr > 0:
        fail("--epochs ≥ 2 (one warm-up epoch), --batch_size, --latency_rounds, --val_per_class ≥ 1, --lr > 0")
    if not a.name.replace("_", "").isalnum() or not a.name[0].isalpha():
        fail(f"--name={a.name!r}: letters, digits and '_', starting with a letter")
    if not a.dataset.startswith("folder:") or not os.path.isdir(os.path.join(a.dataset[7:], "train")):
        fail(f"--dataset={a.dataset}: folder:PATH with a train/ folder of class folders (the selection holds "
             "images of it out)")
    if not os.path.isdir(a.zoo_dir):
        fail(f"--zoo_dir={a.zoo_dir}: no such directory")
    setup_path = os.path.join(a.searches, "setup.json")
    try:
        a.space_setup = _load(setup_path)
        for key in ("width", "depth", "channel_ratios"):
            a.space_setup[key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"--searches={a.searches}: no readable setup.json of benchmarks.spos_ablation ({e})")
    for c in a.candidates:
        for f in ("summary.json", "derived.json"):
            if not os.path.isfile(os.path.join(a.searches, "search", c, f)):
                fail(f"--searches={a.searches}: search/{c}/{f} is missing (run benchmarks.spos_ablation first)")
    return a


def setup_space(setup: dict, classes: int, bits=()):
    """The ``search.spos.cifar_space`` of a ``benchmarks.spos_ablation`` setup (its width, depth, channel ratios)."""
    from search import spos as sp
    ratios = tuple(float(r) for r in str(setup["channel_ratios"]).split(","))
    return sp.cifar_space(float(setup["width"]), tuple(int(d) for d in str(setup["depth"]).split(",")), classes,
                          ratios, tuple(bits))


def hold_out(train_dir: str, out_root: str, per_class: int) -> dict:
    """``out_root/{train,test}/<class>/``: links to the files of ``train_dir``'s class folders, the last
    ``per_class`` (sorted names) of each class in ``test``. Built beside and renamed into place, so it is complete
    or absent. Returns counts."""
    from inputs.classification import IMAGE_EXTENSIONS
    marker = os.path.join(out_root, "split.json")
    if os.path.exists(marker):
        return _load(marker)
    classes = sorted(d for d in os.listdir(train_dir) if not d.startswith(".")
                     and os.path.isdir(os.path.join(train_dir, d)))
    tmp = out_root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"train": 0, "validation": 0, "per_class": per_class, "source": os.path.abspath(train_dir)}
    for c in classes:
        files = sorted(f for f in os.listdir(os.path.join(train_dir, c)) if f.lower().endswith(IMAGE_EXTENSIONS))
        if len(files) <= per_class:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ValueError(f"{os.path.join(train_dir, c)}: {len(files)} images, not more than --val_per_class="
                             f"{per_class}")
        for split, part in (("train", files[:-per_class]), ("test", files[-per_class:])):
            d = os.path.join(tmp, split, c)
            os.makedirs(d)
            for f in part:
                os.symlink(os.path.abspath(os.path.join(train_dir, c, f)), os.path.join(d, f))
        counts["train"] += len(files) - per_class
        counts["validation"] += per_class
    write_json(os.path.join(tmp, "split.json"), counts)
    shutil.rmtree(out_root, ignore_errors=True)
    os.replace(tmp, out_root)
    return counts


def published_already(a, weights_sha256_of, train_command: str) -> bool:
    """Whether ``--zoo_dir`` holds ``--name``'s card for this very training with weights matching its sha256."""
    card_path = os.path.join(a.zoo_dir, "weights", f"{a.name}-cifar10.json")
    try:
        card = _load(card_path)
        return (card["training"]["command"] == train_command
                and card["sha256"] == weights_sha256_of(os.path.join(a.zoo_dir, "weights", card["file"])))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def plot(result: dict, path: str) -> None:
    """Left: the selection (validation top-1 of each searched path, one seed; its supernet top-1 beside). Right:
    top-1 on the test images of the selected path and all_choice_3, one dot per seed, mean ± std."""
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    sel = result.get("selection", {}).get("candidates", {})
    names = list(sel)
    if names:
        val = [100 * (sel[n].get("val_top1") or 0) for n in names]
        sup = [100 * sel[n]["supernet_top1"] for n in names]
        x = np.arange(len(names))
        chosen = result["selection"].get("selected")
        ax_s.bar(x - 0.2, val, 0.4, color=["tab:red" if n == chosen else "tab:grey" for n in names],
                 label="retrained, validation split")
        ax_s.bar(x + 0.2, sup, 0.4, color="tab:blue", alpha=0.5, label="supernet (the search's criterion)")
        for i, n in enumerate(names):
            ax_s.annotate(f"{val[i]:.1f}", (i - 0.2, val[i]), ha="center", va="bottom", fontsize=8)
        ax_s.set_xticks(x)
        ax_s.set_xticklabels([f"{n}\n{sel[n]['macs'] / 1e6:.2f}M MACs" for n in names], fontsize=8)
        ax_s.set_ylabel("top-1 (%)")
        ax_s.legend(fontsize=7, loc="lower right")
        ax_s.set_title(f"selection (red: published) on {result['selection']['split']['validation']:,} held-out "
                       "training images", fontsize=9)
    models = result.get("models", {})
    for i, (name, m) in enumerate(models.items()):
        if not m.get("top1_per_seed"):
            continue
        y = [100 * v for v in m["top1_per_seed"]]
        color = "tab:red" if name == "searched" else "tab:grey"
        ax_t.plot([i] * len(y), y, "o", color=color, alpha=0.5)
        ax_t.errorbar(i + 0.15, np.mean(y), yerr=np.std(y, ddof=1) if len(y) > 1 else 0, fmt="_", color=color,
                      ms=14, capsize=4)
    if models:
        ax_t.set_xticks(range(len(models)))
        ax_t.set_xticklabels([f"{m['label']}\n{m['macs'] / 1e6:.2f}M MACs" for m in models.values()], fontsize=8)
        ax_t.set_xlim(-0.5, len(models) - 0.5)
    ax_t.set_ylabel("top-1 on the test images (%)")
    ax_t.set_title(f"retrained on all training images, {result['setup']['epochs']} epochs, seeds "
                   f"{result['setup']['seeds']}", fontsize=9)
    for ax in (ax_s, ax_t):
        ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    a = parse(argv)
    from common.io import write_text
    from inputs.classification import known_classes
    from models import spec as spec_lib
    from models.counting import count
    from models.weights import sha256
    from search import spos as sp

    command = "python -m benchmarks.spos_zoo " + " ".join(sys.argv[1:] if argv is None else argv)
    logs = os.path.join(a.work_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    log = lambda name: os.path.join(logs, f"{name}.log")  # noqa: E731
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), StageTimes.previous(a.out))
    try:
        ledger = harness.Ledger(a.ledger or None, a.work_dir, setup={
            "searches": a.space_setup, "candidates": a.candidates, "dataset": a.dataset,
            "val_per_class": a.val_per_class, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr})
    except ValueError as e:
        harness.usage_error(PROG, f"--ledger: {e}")
    st = a.space_setup
    space = setup_space(st, known_classes(a.dataset))
    ratios = tuple(float(r) for r in space.channel_ratios)
    choice3 = np.zeros((space.n_blocks, 3), np.int32)
    choice3[:, 0], choice3[:, 1] = space.choices.index("3"), ratios.index(1.0)
    limit = sp.cost(space, choice3)["macs"]
    schedule = (f"recipes.train from scratch: SGD momentum 0.9 (no Nesterov), lr {a.lr}, batch {a.batch_size}, "
                f"{a.epochs} epochs (1 warm-up, cosine to 0), decoupled weight decay 4e-5, label smoothing 0.1, "
                "random crop (4-pixel pad) + flip")
    result = {"setup": {"dataset": a.dataset, "searches": a.searches, "space": {
        "space": f"search.spos.cifar_space(width={st['width']}, depth=({st['depth']}))", "choices": list(space.choices),
        "channel_ratios": list(ratios), "max_macs": limit, "max_macs_is": "MACs of all_choice_3"},
        "candidates": a.candidates, "val_per_class": a.val_per_class, "seeds": a.seeds, "epochs": a.epochs,
        "batch_size": a.batch_size, "lr": a.lr, "schedule": schedule,
        "test_images": "the test split of --dataset (5,000 for ../shared/data/cifar10)"},
        "selection": {}, "models": {}, "stage_seconds": seconds, "stages_run_now": seconds.ran, "host": host_info(),
        "command": command}

    def report():
        write_json(a.out, round_floats(result))
        plot(result, os.path.splitext(a.out)[0] + ".png")

    def train(name, spec_path, seed, dataset, out_dir, use_ledger=True):
        return harness.train_top1(name, spec_path, out_dir, log(name), seconds, dataset, a.epochs, a.batch_size,
                                  a.lr, seed, ledger=ledger if use_ledger else None)

    # 1. selection on a validation split held out of the training images
    split_root = os.path.join(a.work_dir, "selection_data")
    try:
        split = hold_out(os.path.join(a.dataset[7:], "train"), split_root, a.val_per_class)
    except (OSError, ValueError) as e:
        harness.usage_error(PROG, f"--dataset={a.dataset}: {e}")
    result["selection"] = {"split": split, "rule": "highest validation top-1 after one retraining (seed "
                                                   f"{a.seeds[0]}) on the rest of the training images",
                           "candidates": {}}
    for c in a.candidates:
        summary = _load(os.path.join(a.searches, "search", c, "summary.json"))
        spec_path = os.path.join(a.searches, "search", c, "derived.json")
        n = count(spec_lib.loads(open(spec_path, "rb").read()))
        result["selection"]["candidates"][c] = {
            "path": summary["best"], "spec": spec_path, "macs": n.macs, "params": n.params,
            "supernet_top1": summary["best_acc"], "derived_from": summary["derived_from"]}
    for c in a.candidates:
        top1 = train(f"select_{c}", result["selection"]["candidates"][c]["spec"], a.seeds[0],
                     f"folder:{split_root}", os.path.join(a.work_dir, "select", c))
        result["selection"]["candidates"][c]["val_top1"] = top1
        report()
    cands = result["selection"]["candidates"]
    chosen = max(a.candidates, key=lambda c: (cands[c]["val_top1"], -cands[c]["macs"]))
    result["selection"]["selected"] = chosen
    result["selection"]["supernet_would_pick"] = max(a.candidates, key=lambda c: cands[c]["supernet_top1"])
    report()
    if a.stop_after == "select":
        return 0

    # 2. retraining of the selected path and all_choice_3 on all training images
    spec_dir = os.path.join(a.work_dir, "specs")
    os.makedirs(spec_dir, exist_ok=True)
    specs = {"searched": cands[chosen]["spec"], "all_choice_3": os.path.join(spec_dir, "all_choice_3.json")}
    write_text(specs["all_choice_3"], spec_lib.dumps(sp.arch_spec(space, choice3, name="spos_all_choice_3")))
    labels = {"searched": f"{chosen} (published)", "all_choice_3": "all choice_3 (no search)"}
    train_dir = lambda name, seed: os.path.join(a.work_dir, "train", f"{name}_s{seed}")  # noqa: E731
    ship_dir = train_dir("searched", a.seeds[0])
    train_cmd = "python -m " + " ".join([
        "recipes.train", f"--model={specs['searched']}", "--weights=", f"--dataset={a.dataset}",
        f"--epochs={a.epochs}", f"--batch_size={a.batch_size}", "--optimizer=sgd", f"--lr={a.lr}",
        "--warmup_epochs=1", f"--seed={a.seeds[0]}", f"--val_freq={a.epochs}", "--noprogress", f"--out_dir={ship_dir}"])
    done = published_already(a, sha256, train_cmd)
    cards = {}
    for name, path in specs.items():
        n = count(spec_lib.loads(open(path, "rb").read()))
        result["models"][name] = {"label": labels[name], "spec": path, "macs": n.macs, "params": n.params,
                                  "top1_per_seed": []}
        for seed in a.seeds:
            # the shipped weights must exist unless they are published already: that training is not restored
            shipped = name == "searched" and seed == a.seeds[0]
            out_dir = train_dir(name, seed)
            top1 = train(f"train_{name}_s{seed}", path, seed, a.dataset, out_dir, use_ledger=done or not shipped)
            if shipped and not done:
                ledger.keep(out_dir, ["model_card.json"])
            cards[(name, seed)] = _load(os.path.join(out_dir, "model_card.json"))
            result["models"][name]["top1_per_seed"].append(top1)
            result["models"][name].update(stats(result["models"][name]["top1_per_seed"]))
            report()
    result["searched_minus_all_choice_3"] = diff(result["models"]["searched"], result["models"]["all_choice_3"])
    report()
    if a.stop_after == "retrain":
        return 0

    # 3. latency, both networks in one interleaved session
    lat_path = os.path.join(a.work_dir, "latency.json")
    latency = _load(lat_path) if os.path.exists(lat_path) else {}
    if set(specs) - set(latency):
        t0 = time.time()
        latency = harness.litert_latency({n: spec_lib.loads(open(p, "rb").read()) for n, p in specs.items()},
                                         a.latency_rounds, clock="cpu")
        seconds.record("latency", time.time() - t0)
        write_json(lat_path, latency)
    for name in specs:
        result["models"][name]["latency_ms"] = latency[name]
    report()
    if a.stop_after == "latency":
        return 0

    # 4. publish the first seed's weights of the selected path, then re-score them through the zoo
    m, b = result["models"]["searched"], result["models"]["all_choice_3"]
    shipped = cards[("searched", a.seeds[0])]
    if not done:
        summary = _load(os.path.join(a.searches, "search", chosen, "summary.json"))
        top1 = shipped["metrics"]["val_top1"]
        card = {
            "dataset": f"CIFAR-10, 10 classes, 32x32 ({a.dataset}: trained on "
                       f"{shipped['data']['train_examples']:,} training images, scored on the "
                       f"{shipped['data']['val_examples']:,} images of its test split; ../shared/data/cifar10 holds "
                       "5,000 of the 10,000 CIFAR-10 test images)",
            "input_size": 32, "class_names": shipped.get("class_names"),
            "metrics": {"top1": top1, "top5": shipped["metrics"].get("val_top5"),
                        "test_images": shipped["data"]["val_examples"],
                        "top1_binomial_se": float(np.sqrt(top1 * (1 - top1) / shipped["data"]["val_examples"])),
                        "seed": a.seeds[0], "top1_mean_over_seeds": m["top1_mean"],
                        "top1_std_over_seeds": m["top1_std"], "seeds": a.seeds, "top1_per_seed": m["top1_per_seed"],
                        "baselines_matched_on": "the searches' MACs limit (all_choice_3 is the limit network)",
                        "baselines": {"all_choice_3": {"top1_mean": b["top1_mean"], "top1_std": b["top1_std"],
                                                       "macs": b["macs"], "params": b["params"],
                                                       "latency_ms": b["latency_ms"]["median_ms"],
                                                       **(result["searched_minus_all_choice_3"] or {})}},
                        "macs": m["macs"], "params": m["params"],
                        "latency_ms_litert_fp32_1thread_cpu_time": {
                            "median": m["latency_ms"]["median_ms"], "p10": m["latency_ms"].get("p10_ms"),
                            "p90": m["latency_ms"].get("p90_ms"), "host": result["host"]}},
            "training": {"epochs": a.epochs, "batch_size": a.batch_size, "optimizer": schedule,
                         "augmentation": "random crop (4-pixel pad) + horizontal flip (recipes.train "
                                         "--augment=standard)", "command": train_cmd},
            "search": {"row": chosen, "path": summary["best"], "derived_from": summary["derived_from"],
                       "supernet_top1": summary["best_acc"], "max_macs": limit,
                       "selection": {"rule": result["selection"]["rule"],
                                     "validation_images": split["validation"],
                                     "val_top1": {c: cands[c]["val_top1"] for c in a.candidates}},
                       "space": result["setup"]["space"]["space"],
                       "supernet": f"benchmarks.spos_ablation (its setup: {json.dumps(st)})"},
            "produced_by": command,
            "source": "this repository: Single Path One-Shot (Guo et al.), the ShuffleNetV2 space of "
                      "search.spos.cifar_space at 32x32, the path derived by evolution with BN recalibration on a "
                      "supernet trained with uniform constrained sampling, retrained from scratch by recipes.train",
            "license": "Apache-2.0",
        }
        write_zoo(a, specs["searched"], card, os.path.join(ship_dir, "weights.npz"))
    card = _load(os.path.join(a.zoo_dir, "weights", f"{a.name}-cifar10.json"))
    return finish_published(PROG, a, card, m, result, logs, seconds, report)


if __name__ == "__main__":
    sys.exit(main())
