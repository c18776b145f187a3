"""SPOS mixed precision that deploys: a bit-width search on the published SPOS network, exported as one LiteRT model.

    python -m benchmarks.spos_mixed_precision --out benchmarks/results/spos_mixed_precision.json

The network is a published zoo model of the SPOS CIFAR space (``--model``, default ``spos_cifar10`` with its
``cifar10`` weights; the card names its path, ``--searches``' ``setup.json`` the space). Its bit widths per block
are searched the SPOS way (the paper's mixed-precision search on a fixed network): a supernet of that very network
whose blocks each sample one of ``--bits`` (default ``8:8,8:16,32:32``, what LiteRT runs: int8, int16×8, float),
trained by ``recipes.search_spos --fix_path=<path>`` (DoReFa weights and PACT activations; 32 bits is float), then
evolution with BN recalibration and random search under ``--max_bitops`` (default: every block at 8:16, so the
search may buy float blocks with int8 ones). The derived bits (the better of evolution and random search by
supernet top-1) deploy on the published float weights (post-training quantization calibrated on ``--calibration``
training images) through ``export.mixed_precision``: each block at its precision in one file, stem and head int8.

Compared on the test images (``../shared/data/cifar10``: 5,000), same weights, same calibration images:
``float32`` (the float conversion), ``int8`` (the repository's int8 export: the converter's MLIR quantizer),
``int8_ptq`` / ``int16x8`` (every part at int8 / int16×8 through the splice: TFLite's post-training quantizer,
which the mixed model's integer parts come from) and ``searched``. Per model: file size, top-1, the paired difference
to float32 and to int8 with its standard error over the images (``sqrt(b + c − (b − c)²/n) / n`` from the
discordant counts), top-1 agreement with float32, and LiteRT latency (one thread, the thread's CPU time; every model
in one interleaved session). Sub-8-bit widths are not searched: the runtime has no sub-8-bit kernels.

Resumable: supernet and search resume in ``--work_dir``; a rerun with both finished re-measures only.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import StageTimes, host_info, round_floats, write_json

PROG = "spos_mixed_precision"
DATA = "folder:../shared/data/cifar10"
SEARCHES_DIR = os.path.join("benchmarks", "results", "spos_ablation_runs")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(argv):
    p = harness.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path (a PNG is written beside it)")
    p.add_argument("--model", default="spos_cifar10", help="published zoo model of the SPOS space (cifar10 card)")
    p.add_argument("--searches", default=SEARCHES_DIR, help="spos_ablation's ledger: setup.json names the space")
    p.add_argument("--work_dir", default="runs/spos_mixed_precision")
    p.add_argument("--dataset", default=DATA)
    p.add_argument("--bits", default="8:8,8:16,32:32", help="w:a choices per block")
    p.add_argument("--max_bitops", type=float, default=None, help="BitOps limit (default: every block at 8:16)")
    p.add_argument("--train_limit", type=int, default=10000, help="training images of the supernet")
    p.add_argument("--supernet_epochs", type=int, default=20)
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--recal_images", type=int, default=512)
    p.add_argument("--val_images", type=int, default=1000)
    p.add_argument("--calibration", type=int, default=200, help="training images calibrating the quantization")
    p.add_argument("--test_limit", type=int, default=0, help="test images scored (0: all)")
    p.add_argument("--latency_rounds", type=int, default=7)
    a = p.parse_args(argv)

    def fail(msg):
        harness.usage_error(PROG, msg)
    from models.spec import ACTIVATION_BITS, WEIGHT_BITS
    try:
        a.bits = [tuple(int(v) for v in b.split(":")) for b in a.bits.split(",") if b]
    except ValueError:
        fail(f"--bits={a.bits}: comma-separated w:a pairs of integers")
    if len(a.bits) < 2 or any(len(b) != 2 or b[0] not in WEIGHT_BITS or b[1] not in ACTIVATION_BITS for b in a.bits):
        fail("--bits: at least two w:a pairs, w 1-8 or 32, a 1-8, 16 or 32")
    if a.max_bitops is None and (8, 16) not in a.bits:
        fail("--max_bitops: give one (the default, every block at 8:16, needs 8:16 in --bits)")
    if min(a.train_limit, a.supernet_epochs, a.population, a.iterations, a.recal_images, a.val_images,
           a.calibration, a.latency_rounds) < 1 or a.test_limit < 0:
        fail("--train_limit, --supernet_epochs, --population, --iterations, --recal_images, --val_images, "
             "--calibration, --latency_rounds ≥ 1; --test_limit ≥ 0")
    if not a.dataset.startswith("folder:") or not os.path.isdir(a.dataset[7:]):
        fail(f"--dataset={a.dataset}: folder:PATH of an existing directory")
    card = os.path.join(REPO, "zoo", "weights", f"{a.model}-cifar10.json")
    try:
        with open(card) as f:
            a.card = json.load(f)
        a.path = a.card["search"]["path"]
        with open(os.path.join(a.searches, "setup.json")) as f:
            a.setup = json.load(f)
        a.setup["width"], a.setup["depth"], a.setup["channel_ratios"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"--model={a.model} / --searches={a.searches}: need a cifar10 card with search.path and "
             f"spos_ablation's setup.json ({e})")
    return a


def paired(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """top-1(a) − top-1(b) on the same images, with the standard error of a paired difference of proportions."""
    n = len(correct_a)
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    d = (b - c) / n
    se = float(np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n)
    return {"diff": d, "se": se, "a_only": b, "b_only": c, "exceeds_2se": bool(abs(d) > 2 * se) if se else d != 0}


def arrays(dataset: str, split: str, limit: int | None):
    from inputs import classification as data
    ds, _ = data.load(dataset, split, image_size=32, batch_size=100, training=False, limit=limit)
    batches = list(ds.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def plot(result: dict, path: str) -> None:
    from reports.plots import pyplot, save_figure
    plt = pyplot()
    fig, (ax_a, ax_s) = plt.subplots(1, 2, figsize=(11, 4.2))
    models = result.get("models", {})
    for name, m in models.items():
        color = "tab:red" if name.startswith("searched") else "tab:grey"
        se = m.get("vs_float32", {}).get("se") or 0.0  # paired with float32: same images, same weights
        ax_a.errorbar(m["latency_ms"]["median_ms"], 100 * m["top1"], yerr=200 * se, fmt="o", color=color,
                      capsize=3)
        ax_a.annotate(name, (m["latency_ms"]["median_ms"], 100 * m["top1"]), fontsize=8, xytext=(4, 3),
                      textcoords="offset points")
        ax_s.bar(name, m["file_bytes"] / 1e3, color=color)
    ax_a.set_xlabel("LiteRT latency, ms (1 thread, CPU time)")
    ax_a.set_ylabel(f"top-1 on {result['setup']['test_images']:,} test images (%)")
    ax_a.set_title(f"{result['setup']['model']}: searched bits vs uniform precision\n"
                   "(bars: ±2 SE of the difference to float32, paired over the images)", fontsize=9)
    ax_s.set_ylabel("file size (kB)")
    ax_s.tick_params(axis="x", labelsize=8, rotation=20)
    for ax in (ax_a, ax_s):
        ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    a = parse(argv)
    from recipes.cli import run_stage
    from search import spos as sp
    command = "python -m benchmarks.spos_mixed_precision " + " ".join(sys.argv[1:] if argv is None else argv)
    os.makedirs(os.path.join(a.work_dir, "logs"), exist_ok=True)
    seconds = StageTimes(os.path.join(a.work_dir, "stage_seconds.json"), StageTimes.previous(a.out))
    from benchmarks.spos_zoo import setup_space
    st = a.setup
    space = setup_space(st, 10, a.bits)
    path = sp.from_key(a.path)
    if a.max_bitops is None:
        a.max_bitops = sp.cost(space, sp.fix(path.copy(), {2: a.bits.index((8, 16))}))["bitops"]
    search_dir = os.path.join(a.work_dir, "search")
    args = ["recipes.search_spos", "--phase=both", f"--dataset={a.dataset}", f"--width={st['width']}",
            f"--depth={st['depth']}", f"--channel_ratios={st['channel_ratios']}",
            f"--bits={','.join(f'{w}:{b}' for w, b in a.bits)}", f"--fix_path={a.path}",
            f"--max_bitops={a.max_bitops:.0f}", f"--epochs={a.supernet_epochs}", f"--limit={a.train_limit}",
            f"--population={a.population}", f"--iterations={a.iterations}", f"--top_k={max(2, a.population // 4)}",
            f"--recal_images={a.recal_images}", f"--val_images={a.val_images}", "--seed=0", "--name=spos_mixed",
            "--noprogress", f"--out_dir={search_dir}"]
    if not os.path.exists(os.path.join(search_dir, "derived.json")):
        seconds.record("search", run_stage("search", args, os.path.join(a.work_dir, "logs", "search.log")))
    with open(os.path.join(search_dir, "summary.json")) as f:
        summary = json.load(f)
    best = sp.from_key(summary["best"])
    result = {"setup": {"model": a.model, "weights": "cifar10", "path": a.path, "bits_choices": a.bits,
                        "max_bitops": a.max_bitops, "max_bitops_is": "every block at 8:16" if (8, 16) in a.bits
                        else "--max_bitops", "supernet": f"{a.supernet_epochs} epochs on {a.train_limit} images",
                        "calibration_images": a.calibration, "test_images": None, "dataset": a.dataset},
              "search": {"best": summary["best"], "derived_from": summary["derived_from"],
                         "supernet_top1": summary["best_acc"],
                         "evolution": {k: {"best_acc": v["best_acc"], "evaluated": v["evaluated"]}
                                       for k, v in summary["evolution"].items()},
                         "bits_per_block": [list(a.bits[q]) for q in best[:, 2]], "command": "python -m " +
                         " ".join(args)},
              "models": {}, "stage_seconds": seconds, "host": host_info(), "command": command}

    t0 = time.time()
    import zoo
    from export import litert
    from export import mixed_precision as mp
    from export.fold import deploy_spec, fold_preprocessing
    spec = zoo.get_spec(a.model)
    model = zoo.build(a.model, weights="cifar10")
    target = deploy_spec(spec, "fold")
    deployed = fold_preprocessing(model, target, 32)
    calib, _ = arrays(a.dataset, "train", a.calibration)
    test_x, test_y = arrays(a.dataset, "test", a.test_limit or None)
    result["setup"]["test_images"] = int(len(test_x))

    def representative():
        for x in calib:
            yield [x[None]]
    bufs = mp.conversions(deployed, representative)
    names = list(mp.spec_plan(target))
    searched_spec = sp.arch_spec(space, best)
    plan = {"stem": "int8", "head": "int8",
            **{n: p for n, p in mp.spec_plan(searched_spec).items() if n not in ("stem", "head")}}
    files = {"float32": bufs["float"], "int8": litert.convert(deployed, litert.converter_options("int8",
                                                                                                  representative))}
    reports = {}
    for name, pl in (("int8_ptq", {n: "int8" for n in names}), ("int16x8", {n: "int16x8" for n in names}),
                     ("searched", plan)):
        files[name], reports[name] = mp.splice(bufs, names, pl)
    from ai_edge_litert.interpreter import Interpreter

    from common.quiet_tf import filtered_stderr
    logits = {}
    for name, buf in files.items():
        with filtered_stderr():
            it = Interpreter(model_content=buf, num_threads=1)
            it.allocate_tensors()
        logits[name] = litert.predict(it, test_x)
    correct = {n: v.argmax(-1) == test_y for n, v in logits.items()}
    latency = harness.litert_latency(files, a.latency_rounds, clock="cpu")
    for name in files:
        result["models"][name] = {
            "file_bytes": len(files[name]), "top1": float(correct[name].mean()),
            "top1_agreement_with_float32": float((logits[name].argmax(-1) == logits["float32"].argmax(-1)).mean()),
            "max_abs_logit_diff_to_float32": float(np.abs(logits[name] - logits["float32"]).max()),
            "vs_float32": paired(correct[name], correct["float32"]), "vs_int8": paired(correct[name], correct["int8"]),
            "latency_ms": latency[name], **({"mixed_precision": reports[name]} if name in reports else {})}
    seconds.record("deploy", time.time() - t0)
    write_json(a.out, round_floats(result))
    plot(result, os.path.splitext(a.out)[0] + ".png")
    for name, m in result["models"].items():
        print(f"{name:9s} {m['file_bytes'] / 1e3:7.1f} kB  top-1 {m['top1']:.4f} ({m['vs_float32']['diff']:+.4f} vs "
              f"float, SE {m['vs_float32']['se']:.4f})  {m['latency_ms']['median_ms']:.3f} ms")
    print(f"searched bits per block: {result['search']['bits_per_block']} -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
