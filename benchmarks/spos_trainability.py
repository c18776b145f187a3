"""Does the SPOS supernet learn at CPU scale, and why not where it does not: path sampling × depth × choice set.

    python -m benchmarks.spos_trainability --out benchmarks/results/spos_trainability.json

Every row trains a fresh :class:`search.spos_net.SposSupernet` (``search.spos.cifar_space(--width)`` with the row's
depth, block choices and channel ratios) for ``--steps`` steps of :class:`search.spos_train.SposTrainer` (batch 64,
SinglePathSGD, lr ``--lr`` decaying linearly to 0, label smoothing 0.1) on the first ``--train_limit`` CIFAR-10
training images outside a 10% holdout of the training set, for each of ``--seeds``. Only the path sampler differs:

- ``one_path``: every block choice_3 at ratio 1.0 on every step (the supernet trained as one ordinary network);
- ``whole``: one block choice drawn per step and used by every block (two or four whole networks sharing the stem,
  head and classifier);
- ``stage``: one block choice drawn per stage per step;
- ``block``: one choice per block per step, channel ratios uniform (SPOS).

Recorded per row and seed: the sampled paths' training cross-entropy and top-1 every 50 steps; at the end, the
held-out top-1 of ``--paths`` uniformly drawn paths after BN recalibration on 512 training images (the search's own
criterion, ``CandidateEvaluator``; for the ``whole`` and ``stage`` rows these are mixtures their sampler never
trained); and a probe of how much the output depends on the path, at initialisation and at the end: on one held-out
batch of 256 images (training-mode BN; the pooled features come before the dropout), the correlation of the head's
pooled features between a random path and (a) the same path with block 0's choice changed, (b) the last block's
changed, (c) another random path. A correlation near 0 means the head sees unrelated features whenever the path
changes.

Resumable: each finished (row, seed) is kept under ``--work_dir`` and in the result's ``runs``; a rerun skips them.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, write_json

DATA = "folder:../shared/data/cifar10"
FULL = ("3", "5", "7", "x")
PAPER_RATIOS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
D20, D8, D5 = (4, 4, 8, 4), (2, 2, 2, 2), (1, 1, 2, 1)
# name: (depth, block choices, channel ratios, sampler)
ROWS = {
    "one_path_d20": (D20, ("3", "5"), (1.0,), "one_path"),
    "whole_d20": (D20, ("3", "5"), (1.0,), "whole"),
    "stage_d20": (D20, ("3", "5"), (1.0,), "stage"),
    "block_d20": (D20, ("3", "5"), (1.0,), "block"),
    "block_d8": (D8, ("3", "5"), (1.0,), "block"),
    "full_block_d20": (D20, FULL, PAPER_RATIOS, "block"),
    "full_block_d8": (D8, FULL, PAPER_RATIOS, "block"),
    "full_block_d5": (D5, FULL, PAPER_RATIOS, "block"),
}
SAMPLERS = ("one_path", "whole", "stage", "block")


def draw(space, sampler: str, rng: np.random.Generator) -> np.ndarray:
    """One training path of ``sampler`` (module docstring)."""
    from search import spos as sp
    arch = sp.uniform(space, rng)
    n = len(space.choices)
    if sampler == "one_path":
        arch[:, 0], arch[:, 1] = space.choices.index("3"), space.channel_ratios.index(1.0)
    elif sampler == "whole":
        arch[:, 0] = rng.integers(n)
    elif sampler == "stage":
        start = 0
        for blocks in space.stage_blocks:
            arch[start:start + blocks, 0] = rng.integers(n)
            start += blocks
    return arch


def probe(model, space, images, rng: np.random.Generator) -> dict:
    """Correlations of the pooled head features between a random path and its variants (module docstring)."""
    import tensorflow as tf

    from search import spos as sp

    def features(arch):
        x = (tf.cast(images, tf.float32) - model._mean) / model._std
        x = model.stem(x, mode="train")
        for b, block in enumerate(model.blocks):
            x = block(x, tf.constant(arch[b]), mode="train")
        f = tf.reduce_mean(model.head(x, mode="train"), [1, 2]).numpy()
        return f - f.mean(0)

    def corr(f, g):
        return float((f * g).sum() / np.sqrt((f * f).sum() * (g * g).sum() + 1e-30))

    base = sp.uniform(space, rng)
    fb, out = features(base), {}
    for name, block in (("flip_first_block", 0), ("flip_last_block", space.n_blocks - 1)):
        other = base.copy()
        other[block, 0] = (other[block, 0] + 1) % len(space.choices)
        out[name] = corr(fb, features(other))
    out["other_random_path"] = float(np.mean([corr(fb, features(sp.uniform(space, rng))) for _ in range(3)]))
    return out


def run_row(name: str, seed: int, a) -> dict:
    import keras
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    from inputs.classification import load
    from search import spos as sp
    from search.spos_net import build_supernet
    from search.spos_train import CandidateEvaluator, SposConfig, SposTrainer
    depth, choices, ratios, sampler = ROWS[name]
    space = sp.cifar_space(a.width, depth, 10, ratios, choices=choices)
    keras.utils.set_random_seed(seed)  # first: the data order and augmentation of a (row, seed) never depend on
    # the runs before it in this process, so a resumed run measures what a fresh one would
    common = dict(image_size=32, seed=seed, holdout=0.1, limit=a.train_limit)
    train, _ = load(a.dataset, "train", batch_size=64, training=True, repeat=True, **common)
    recal, _ = load(a.dataset, "train", batch_size=256, training=False, **common)
    held, _ = load(a.dataset, "holdout", batch_size=256, training=False, **common)
    recal_x = np.concatenate([x.numpy() for x, _ in recal.take(2)])
    held_xy = [(x.numpy(), y.numpy()) for x, y in held.take(4)]
    val_x, val_y = np.concatenate([x for x, _ in held_xy]), np.concatenate([y for _, y in held_xy])
    model = build_supernet(space, seed=seed)
    rng = np.random.default_rng([seed, 1])
    start = probe(model, space, val_x[:256], rng)
    trainer = SposTrainer(model, SposConfig(epochs=1, lr=a.lr, sampling="uniform", seed=seed))
    it, paths = iter(train), np.random.default_rng([seed, 2])
    curve, window, t0 = [], [], time.time()
    for step in range(a.steps):
        trainer.lr.assign(a.lr * (1.0 - step / a.steps))
        ce, acc = trainer.train_step(*next(it), tf.constant(draw(space, sampler, paths)))
        window.append((float(ce), float(acc)))
        if (step + 1) % 50 == 0:
            ce_m, acc_m = np.mean(window, axis=0)
            curve.append({"step": step + 1, "train_ce": float(ce_m), "train_top1": float(acc_m)})
            window = []
            print(f"  {name} seed {seed} step {step + 1}: CE {ce_m:.3f}, top-1 {acc_m:.3f}", file=sys.stderr,
                  flush=True)
    seconds = time.time() - t0
    end = probe(model, space, val_x[:256], rng)
    evaluator = CandidateEvaluator(model, recal_x, val_x, val_y, batch_size=256)
    top1 = [evaluator(sp.uniform(space, rng)) for _ in range(a.paths)]
    if sampler == "one_path":
        top1.append(evaluator(draw(space, sampler, rng)))  # the trained path itself
    return {"row": name, "seed": seed, "depth": list(depth), "choices": list(choices), "channel_ratios": list(ratios),
            "sampler": sampler, "curve": curve, "final_train_ce": curve[-1]["train_ce"],
            "final_train_top1": curve[-1]["train_top1"], "random_path_top1": top1[:a.paths],
            "trained_path_top1": top1[a.paths] if sampler == "one_path" else None,
            "probe_init": start, "probe_end": end, "train_seconds": seconds}


def summarize(runs: list[dict], rows: list[str]) -> dict:
    out = {}
    for name in rows:
        rs = [r for r in runs if r["row"] == name]
        if not rs:
            continue
        stat = lambda v: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,  # noqa: E731
                          "n": len(v)}
        out[name] = {"sampler": rs[0]["sampler"], "depth": rs[0]["depth"], "choices": rs[0]["choices"],
                     "channel_ratios": rs[0]["channel_ratios"],
                     "final_train_ce": stat([r["final_train_ce"] for r in rs]),
                     "final_train_top1": stat([r["final_train_top1"] for r in rs]),
                     "random_path_top1": stat([np.mean(r["random_path_top1"]) for r in rs]),
                     **({"trained_path_top1": stat([r["trained_path_top1"] for r in rs])}
                        if rs[0]["trained_path_top1"] is not None else {}),
                     **{f"{when}_{k}": stat([r[f"probe_{when}"][k] for r in rs])
                        for when in ("init", "end") for k in rs[0]["probe_init"]}}
    return out


def plot(runs: list[dict], rows: list[str], path: str) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(rows):
        for j, r in enumerate(rr for rr in runs if rr["row"] == name):
            ax.plot([c["step"] for c in r["curve"]], [c["train_ce"] for c in r["curve"]], color=colors(i % 10),
                    alpha=0.9, lw=1.4, marker="o", ms=2.5, label=name if j == 0 else None)
    ax.axhline(np.log(10), color="k", ls=":", lw=1, label="chance (ln 10)")
    ax.set_xlabel("training step (batch 64)")
    ax.set_ylabel("train cross-entropy of the sampled paths\n(mean over 50 steps)")
    ax.set_title("SPOS supernet on CIFAR-10: which path samplers learn")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main(argv=None) -> int:
    p = harness.ArgumentParser(prog="spos_trainability", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--work_dir", default="runs/spos_trainability")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--train_limit", type=int, default=10000)
    p.add_argument("--paths", type=int, default=4, help="random paths evaluated on the supernet per run")
    p.add_argument("--dataset", default=DATA)
    a = p.parse_args(argv)
    prog = "spos_trainability"
    rows = [r for r in a.rows.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if not rows or bad:
        harness.usage_error(prog, f"--rows: unknown {','.join(bad) or '(none)'}; comma-separated of {','.join(ROWS)}")
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError:
        harness.usage_error(prog, f"--seeds={a.seeds}: comma-separated integers")
    if not seeds or a.steps < 50 or a.paths < 1 or a.lr <= 0 or a.train_limit < 1000:
        harness.usage_error(prog, "--seeds: at least one; --steps ≥ 50; --paths ≥ 1; --lr > 0; --train_limit ≥ 1000")
    from inputs.classification import validate
    try:
        validate(a.dataset)
    except Exception as e:  # noqa: BLE001 — a missing folder etc.: one line
        harness.usage_error(prog, f"--dataset={a.dataset}: {e}")
    setup = {**{k: getattr(a, k) for k in ("steps", "lr", "width", "train_limit", "paths", "dataset")},
             "seeded_before_data": True}  # runs kept before the seed was set first are measured again
    os.makedirs(a.work_dir, exist_ok=True)
    runs = []
    for name in rows:
        for seed in seeds:
            path = os.path.join(a.work_dir, f"{name}_s{seed}.json")
            if os.path.exists(path):
                with open(path) as f:
                    kept = json.load(f)
                if kept.get("setup") == setup:
                    runs.append(kept["run"])
                    continue
            print(f"spos_trainability: {name} seed {seed} ({a.steps} steps)", file=sys.stderr, flush=True)
            run = run_row(name, seed, a)
            write_json(path, round_floats({"setup": setup, "run": run}))
            runs.append(run)
    result = {"benchmark": "spos_trainability", "setup": {**setup, "seeds": seeds, "batch_size": 64,
                                                          "holdout": 0.1, "recal_images": 512, "val_images": 1024},
              "rows": summarize(runs, rows), "runs": runs, "host": host_info()}
    write_json(a.out, round_floats(result))
    plot(runs, rows, os.path.splitext(a.out)[0] + ".png")
    for name, r in result["rows"].items():
        print(f"{name:16s} train CE {r['final_train_ce']['mean']:.3f}  "
              f"train top-1 {r['final_train_top1']['mean']:.3f}  "
              f"random-path top-1 {r['random_path_top1']['mean']:.3f}  flip-first-block r: init "
              f"{r['init_flip_first_block']['mean']:+.2f}, end {r['end_flip_first_block']['mean']:+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
