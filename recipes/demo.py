"""End-to-end demo of one zoo model: describe → build with verified weights → classify → float TFLite → parity →
latency.

    python -m recipes.demo --out_dir=runs/demo                      # EfficientNet-Lite0, ImageNet weights
    python -m recipes.demo --model=mixnet_s --weights= --images=…   # any zoo name or spec path, random init

Writes under ``--out_dir``: ``<model>.tflite``, ``summary.json`` (params, MACs, parity, latency) and
``predictions.png`` (the images with their top-5 classes). This is the foundation's demo; the full pipeline
(search → retrain → export → latency) replaces it when the recipes land.
"""
from __future__ import annotations

from absl import flags

from recipes.cli import UsageError, run
from workflows import demo
from workflows.demo import DemoConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "efficientnet_lite0", "Zoo model name or path of a spec .json.")
flags.DEFINE_string("weights", "imagenet", "Zoo weights tag (e.g. 'imagenet'), a .npz path, or '' for random init.")
flags.DEFINE_string("out_dir", "runs/demo", "Directory for the .tflite, summary.json and predictions.png.")
flags.DEFINE_list("images", [], "Image files or directories to classify (default: a few photos from ../shared/data "
                               "when present, else synthetic images).")
flags.DEFINE_integer("runs", 100, "Timed LiteRT invocations for the latency figure (after 20 warm-up runs).",
                     lower_bound=1)
flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads (mobile-style default: 1).", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = DemoConfig(model=FLAGS.model, weights=FLAGS.weights, out_dir=FLAGS.out_dir, images=tuple(FLAGS.images),
                        runs=FLAGS.runs, threads=FLAGS.threads)
    result = demo.run(config)
    s, lat = result.summary, result.summary["latency_ms"]
    size = s["input_size"]
    print(f"{s['model']}: {s['params']:,} params, {s['macs'] / 1e6:.1f}M MACs at {size}×{size}; "
          f"weights: {config.weights or 'random init'}")
    print(f"{'step':28s} result")
    print(f"{'float TFLite':28s} {s['tflite']} ({s['tflite_bytes'] / 1e6:.1f} MB, {result.export_seconds:.0f}s)")
    print(f"{'TFLite vs Keras max|Δ|':28s} {s['tflite_vs_keras_max_abs_diff']:.2e}")
    print(f"{'latency (LiteRT, ms)':28s} median {lat['median']:.2f}, p10 {lat['p10']:.2f}, p90 {lat['p90']:.2f} "
          f"({config.runs} runs, {config.threads} thread)")
    for p in s["predictions"]:
        top3 = "; ".join(f"{name.split(',')[0]} {prob:.2f}" for _, name, prob in p["top5"][:3])
        image = p["image"] if len(p["image"]) <= 40 else "…" + p["image"][-39:]  # the file name's end is telling
        print(f"{image:28s} {top3}")
    print(f"wrote {result.summary_path} and {result.plot_path}")
    return 0


if __name__ == "__main__":
    run(main)
