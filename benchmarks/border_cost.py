"""What ``--preprocessing=fold_black`` costs a model trained with the mean border: accuracy of the exact export
(``fold``) and of the black-border one on real images, paired, in float32 and int8.

    python -m benchmarks.border_cost --out benchmarks/results/border_cost_lite0.json

A model trained with ``input.border="mean"`` (every published weight file so far) sees normalised zeros beyond the
image edge. Its exact export pads the raw image with the mean (a PADV2, or PAD + ADD for per-channel means): ×1.05
(Lite0) to ×1.12 (ImageNet statistics) of keras.applications' time in ``benchmarks.deploy_preprocessing``.
``fold_black`` drops that op and lets the stem see raw 0 pixels there instead — keras.applications' speed, and a
different function on the outermost ring of stem outputs. This measures the difference where it matters, on the
labels: both files of ``--model`` with ``--weights`` (LiteRT, 1 thread) on every image of ``--dataset`` (by default
the 1,000-image ImageNet sample, one per class; shorter side resized to 224 and centre-cropped, the project's
evaluation transform), top-1/top-5 of each, their top-1 agreement, and
the paired top-1 difference with its standard error (√discordant / n; it exceeds noise when |diff| > 2 SE). int8
files are calibrated on the first ``--calibration`` images of the ``train`` split, the same images for both.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time

from benchmarks import harness
from benchmarks.harness import host_info, round_floats, write_json

DATA = "tsv:../shared/data/imagenet_sample/labels.tsv"


def paired(exact, black, labels) -> dict:
    """Top-1/top-5 of both logit arrays, their top-1 agreement, and the paired top-1 difference black − exact."""
    import numpy as np
    n = len(labels)
    out = {"images": int(n)}
    for name, logits in (("exact", exact), ("black", black)):
        top5 = np.argsort(-logits, axis=-1)[:, :5]
        out[name] = {"top1": float((top5[:, 0] == labels).mean()),
                     "top5": float((top5 == labels[:, None]).any(-1).mean())}
    a, b = exact.argmax(-1) == labels, black.argmax(-1) == labels
    discordant = int((a != b).sum())
    diff = float(b.mean() - a.mean())
    se = math.sqrt(discordant) / n
    out.update(top1_agreement=float((exact.argmax(-1) == black.argmax(-1)).mean()), top1_diff_black_minus_exact=diff,
               discordant_images=discordant, top1_diff_se=se, exceeds_2se=bool(abs(diff) > 2 * se),
               max_abs_logit_diff=float(np.abs(exact - black).max()), max_abs_logit=float(np.abs(exact).max()))
    return out


def main(argv=None) -> int:
    p = harness.ArgumentParser(prog="border_cost", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--dataset", default=DATA, help="folder:PATH or tsv:PATH (every split is scored)")
    p.add_argument("--modes", default="float32,int8", help="comma-separated, of float32,int8")
    p.add_argument("--calibration", type=int, default=100, help="train-split images calibrating the int8 files")
    a = p.parse_args(argv)
    prog = "border_cost"
    modes = [m for m in a.modes.split(",") if m]
    if not modes or any(m not in ("float32", "int8") for m in modes) or a.calibration < 1:
        print(f"{prog}: --modes: of float32,int8; --calibration ≥ 1", file=sys.stderr)
        return 2
    kind, _, path = a.dataset.partition(":")
    if kind not in ("folder", "tsv") or not os.path.exists(path):
        print(f"{prog}: --dataset={a.dataset}: folder:PATH or tsv:PATH of an existing path", file=sys.stderr)
        return 2
    import zoo
    try:
        spec = zoo.get_spec(a.model)
    except Exception as e:  # ZooError / SpecError: one line
        print(f"{prog}: --model={a.model}: {e}", file=sys.stderr)
        return 2
    from training.weights import resolve_weights
    try:
        weights = resolve_weights(spec, a.weights)  # a tag or a .npz path, sha256-checked: before TensorFlow
    except Exception as e:  # InputError / ZooError: one line
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if spec.input.border != "mean":
        print(f"{prog}: --model={a.model}: its border is already {spec.input.border!r}: fold_black is exact",
              file=sys.stderr)
        return 2

    import numpy as np

    from export import litert
    from export.fold import deploy_spec, fold_preprocessing
    from inputs import classification as data

    t0 = time.time()
    model = zoo.build(a.model, weights=weights or "")
    size = model.input_shape[1]
    splits = {}
    for split in ("train", "test"):
        ds, _ = data.load(a.dataset, split, image_size=size, batch_size=32, training=False)
        batches = list(ds.as_numpy_iterator())
        splits[split] = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    images = np.concatenate([x for x, _ in splits.values()])
    labels = np.concatenate([y for _, y in splits.values()]).astype(np.int64)
    calib = splits["train"][0][:a.calibration]
    print(f"{len(images)} images of {a.dataset}, {size}×{size}", file=sys.stderr, flush=True)
    keras_top1 = float((model.predict(images, batch_size=32, verbose=0).argmax(-1) == labels).mean())
    folded = {"exact": fold_preprocessing(model, spec, size),
              "black": fold_preprocessing(model, deploy_spec(spec, "fold_black"), size)}
    result = {"setup": {"model": a.model, "weights": a.weights, "dataset": a.dataset, "images": int(len(images)),
                        "input_size": size, "eval_transform": "shorter side resized to the input size, centre crop "
                        "(inputs.classification, as recipes.evaluate)",
                        "calibration": f"first {len(calib)} images of the train split",
                        "exact": "--preprocessing=fold (border padded with the mean: exact)",
                        "black": "--preprocessing=fold_black (border as raw black: no op added)",
                        "litert": "ai_edge_litert, 1 thread"},
              "keras_top1": keras_top1, "modes": {}, "ops": {}}
    with tempfile.TemporaryDirectory(prefix="border-cost-") as tmp:
        for mode in modes:
            logits = {}
            for name, m in folded.items():
                path = os.path.join(tmp, f"{name}-{mode}.tflite")
                litert.export(m, path, mode, (lambda: ([x[None]] for x in calib)) if mode == "int8" else None)
                result["ops"][f"{name}/{mode}"] = litert.op_counts(path)
                logits[name] = litert.predict(litert.interpreter(path), images)
            row = paired(logits["exact"], logits["black"], labels)
            result["modes"][mode] = row
            print(f"{mode}: top-1 exact {row['exact']['top1']:.4f}, black {row['black']['top1']:.4f} "
                  f"(diff {100 * row['top1_diff_black_minus_exact']:+.2f} pt, SE {100 * row['top1_diff_se']:.2f}), "
                  f"top-1 agreement {row['top1_agreement']:.4f}", file=sys.stderr, flush=True)
    result.update(host=host_info(), wall_s=round(time.time() - t0, 1),
                  command="python -m benchmarks.border_cost " + " ".join(sys.argv[1:] if argv is None else argv))
    write_json(a.out, round_floats(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
