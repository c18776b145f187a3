"""End-to-end demo of one zoo model: describe → build with verified weights → classify → float TFLite → parity → latency.

    python -m recipes.demo --out_dir=runs/demo                      # EfficientNet-Lite0, ImageNet weights
    python -m recipes.demo --model=mixnet_s --weights= --images=…   # any zoo name or spec path, random init

Writes under ``--out_dir``: ``<model>.tflite``, ``summary.json`` (params, MACs, parity, latency) and
``predictions.png`` (the images with their top-5 classes). This is the foundation's demo; the full pipeline
(search → retrain → export → latency) replaces it when the recipes land.
"""
from __future__ import annotations

import glob
import json
import os
import time

from absl import flags

from recipes._cli import UsageError, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED = os.path.join(ROOT, "..", "shared", "data")

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "efficientnet_lite0", "Zoo model name or path of a spec .json.")
flags.DEFINE_string("weights", "imagenet", "Zoo weights tag (e.g. 'imagenet'), a .npz path, or '' for random init.")
flags.DEFINE_string("out_dir", "runs/demo", "Directory for the .tflite, summary.json and predictions.png.")
flags.DEFINE_list("images", [], "Image files or directories to classify (default: a few photos from ../shared/data "
                               "when present, else synthetic images).")
flags.DEFINE_integer("runs", 100, "Timed LiteRT invocations for the latency figure (after 20 warm-up runs).", lower_bound=1)
flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads (mobile-style default: 1).", lower_bound=1)


def _default_images():
    files = [os.path.join(_SHARED, "raccoon", "JPEGImages", f"raccoon-{i}.jpg") for i in (1, 2)]
    for c in ("dog", "truck"):
        files += sorted(glob.glob(os.path.join(_SHARED, "cifar10_subset", "test", c, "*.png")))[:1]
    return [f for f in files if os.path.exists(f)]


def _load_images(paths, size):
    """(N, size, size, 3) float32 0–255 RGB, short side resized then centre-cropped; synthetic if none."""
    import numpy as np

    from inputs.images import list_image_files, load_center_crop
    try:
        files = list_image_files(paths)
    except FileNotFoundError as e:
        raise UsageError(f"--images: {e}") from None
    if not files and paths:
        raise UsageError(f"--images: no files in {', '.join(paths)}")
    out = []
    for f in files:
        try:
            out.append(load_center_crop(f, size))
        except OSError as e:
            raise UsageError(f"--images: cannot read {f}: {e}") from None
    if out:
        return np.stack(out), [os.path.join(os.path.basename(os.path.dirname(f)), os.path.basename(f)) for f in files]
    rng = np.random.RandomState(0)  # no photos available: smooth synthetic colour fields
    coarse = rng.uniform(0, 255, (2, 4, 4, 3))
    return np.kron(coarse, np.ones((1, size // 4, size // 4, 1))).astype("float32"), ["synthetic-0", "synthetic-1"]


def _plot(images, names, top5, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(images), 2, figsize=(9, 2.2 * len(images)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.6]})
    for (ax_img, ax_bar), img, name, rows in zip(axes, images, names, top5):
        ax_img.imshow(img.astype("uint8"))
        ax_img.set_title(name, fontsize=8)
        ax_img.axis("off")
        labels = [r[1].split(",")[0][:28] for r in rows][::-1]
        ax_bar.barh(labels, [r[2] for r in rows][::-1], color="tab:blue")
        ax_bar.set_xlim(0, 1)
        ax_bar.tick_params(labelsize=8)
    axes[-1][1].set_xlabel("probability (LiteRT float32)")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv):
    import numpy as np

    import zoo
    from export import litert
    from models.counting import count
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Validate everything the user gave before TensorFlow is imported (its import logs to stderr).
    spec = zoo.get_spec(FLAGS.model)
    size = spec.input.size
    cost = count(spec, size)
    images, names = _load_images(FLAGS.images or _default_images(), size)
    weights = FLAGS.weights or None
    if weights and not weights.endswith(".npz"):
        weights = zoo.weights_path(spec.name, weights)  # sha256-verified once, here
    from models.builder import build
    model = build(spec, weights=weights)
    print(f"{spec.name}: {cost.params:,} params, {cost.macs / 1e6:.1f}M MACs at {size}×{size}; "
          f"weights: {FLAGS.weights or 'random init'}")

    os.makedirs(FLAGS.out_dir, exist_ok=True)
    tflite = os.path.join(FLAGS.out_dir, f"{spec.name}.tflite")
    t0 = time.perf_counter()
    litert.export(model, tflite, "float32")
    export_s = time.perf_counter() - t0

    it = litert.interpreter(tflite, FLAGS.threads)
    logits = litert.predict(it, images)
    keras_logits = model.predict(images, verbose=0)
    max_diff = float(np.abs(logits - keras_logits).max())

    latency = litert.summarize(litert.latency(it, FLAGS.runs, warmup=20))
    p10, med, p90 = latency["p10_ms"], latency["median_ms"], latency["p90_ms"]

    labels = zoo.imagenet_labels() if spec.head.classes == 1000 else [str(i) for i in range(spec.head.classes)]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top5 = [[(int(c), labels[c], float(p[c])) for c in np.argsort(-p)[:5]] for p in probs]
    _plot(images, names, top5, os.path.join(FLAGS.out_dir, "predictions.png"))
    summary = {"model": spec.name, "weights": FLAGS.weights or None, "params": cost.params, "macs": cost.macs,
               "input_size": size, "tflite": tflite, "tflite_bytes": os.path.getsize(tflite),
               "export_seconds": round(export_s, 1), "tflite_vs_keras_max_abs_diff": max_diff,
               "latency_ms": {"threads": FLAGS.threads, "runs": FLAGS.runs, "median": med, "p10": p10, "p90": p90},
               "predictions": [{"image": n, "top5": t} for n, t in zip(names, top5)]}
    path = os.path.join(FLAGS.out_dir, "summary.json")
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(path + ".tmp", path)

    print(f"{'step':28s} result")
    print(f"{'float TFLite':28s} {tflite} ({summary['tflite_bytes'] / 1e6:.1f} MB, {export_s:.0f}s)")
    print(f"{'TFLite vs Keras max|Δ|':28s} {max_diff:.2e}")
    print(f"{'latency (LiteRT, ms)':28s} median {med:.2f}, p10 {p10:.2f}, p90 {p90:.2f} "
          f"({FLAGS.runs} runs, {FLAGS.threads} thread)")
    for n, t in zip(names, top5):
        print(f"{n[:28]:28s} " + "; ".join(f"{name.split(',')[0]} {p:.2f}" for _, name, p in t[:3]))
    print(f"wrote {path} and {os.path.join(FLAGS.out_dir, 'predictions.png')}")
    return 0


if __name__ == "__main__":
    run(main)
