"""End-to-end showcase of one zoo model (``python -m recipes.demo``): describe → build with verified weights →
classify → float TFLite → parity → latency. Writes ``<model>.tflite``, ``summary.json`` and ``predictions.png``
(the images with their top-5 classes) under ``out_dir``.
"""
from __future__ import annotations

import dataclasses
import os
import time

from common.checks import ConfigError, check_at_least, check_out_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")
WARMUP = 20
# What a run writes in --out_dir besides MODEL.tflite: checked before any work (common.checks.check_run_outputs).
OUT_FILES = ("predictions.png", "summary.json")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The fields are the flags of ``recipes.demo``; ``images`` empty: a few photos from ../shared/data when
    present, else synthetic images."""

    model: str = "efficientnet_lite0"
    weights: str = "imagenet"
    out_dir: str = "runs/demo"
    images: tuple[str, ...] = ()
    runs: int = 100
    threads: int = 1


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    spec: object
    cost: object
    images: object  # (N, size, size, 3) float32 0–255
    names: list
    weights: str | None  # the file to load (zoo tags resolved and sha256-verified)


@dataclasses.dataclass(frozen=True)
class DemoResult:
    summary: dict
    summary_path: str
    plot_path: str
    export_seconds: float  # unrounded (the summary holds it rounded)


# Photos of ImageNet classes (the classifier's own label set), from the ImageNet sample of ../shared/data.
DEMO_PHOTOS = ("n02099601_golden_retriever.JPEG", "n02123045_tabby.JPEG", "n01443537_goldfish.JPEG",
               "n07920052_espresso.JPEG")


def default_images() -> list[str]:
    files = [os.path.join(SHARED_DATA, "imagenet_sample", f) for f in DEMO_PHOTOS]
    return [f for f in files if os.path.exists(f)]


def load_images(paths, size):
    """((N, size, size, 3) float32 0–255 RGB, names): short side resized then centre-cropped; synthetic if none."""
    import numpy as np

    from common.errors import InputError
    from inputs.images import list_image_files, load_center_crop
    try:
        files = list_image_files(paths)
    except FileNotFoundError as e:
        raise ConfigError(f"--images: {e}") from None
    if not files and paths:
        raise ConfigError(f"--images: no files in {', '.join(paths)}")
    out = []
    for f in files:
        try:
            out.append(load_center_crop(f, size))
        except InputError as e:  # not a regular file, or PIL cannot decode it: the message names the file
            raise ConfigError(f"--images: {e}") from None
    if out:
        return np.stack(out), [os.path.join(os.path.basename(os.path.dirname(f)), os.path.basename(f)) for f in files]
    rng = np.random.RandomState(0)  # no photos available: smooth synthetic colour fields
    coarse = rng.uniform(0, 255, (2, 4, 4, 3))
    return np.kron(coarse, np.ones((1, size // 4, size // 4, 1))).astype("float32"), ["synthetic-0", "synthetic-1"]


def plot(images, names, top5, path):
    """The images beside bar charts of their top-5 classes, written atomically as a PNG."""
    from reports.plots import pyplot, save_figure
    plt = pyplot()
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
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def validate(config: DemoConfig) -> DemoPlan:
    """Everything checkable without TensorFlow (the images are read here).

    Raises:
        InputError (subclasses): a bad value, named by its flag.
    """
    import zoo
    from models.counting import count

    check_at_least(runs=(config.runs, 1), threads=(config.threads, 1))
    spec = zoo.get_spec(config.model)
    check_out_dir(config.out_dir, files=OUT_FILES + (f"{spec.name}.tflite",))
    size = spec.input.size
    cost = count(spec, size)
    images, names = load_images(list(config.images) or default_images(), size)
    weights = config.weights or None
    if weights and not weights.endswith(".npz"):
        weights = zoo.weights_path(spec.name, weights)  # sha256-verified once, here
    return DemoPlan(spec, cost, images, names, weights)


def run(config: DemoConfig) -> DemoResult:
    """Validates ``config`` (before TensorFlow is imported), then builds, exports, compares, times and plots."""
    plan = validate(config)
    import numpy as np

    import zoo
    from common.io import write_json
    from export import litert
    from models.builder import build

    spec, size = plan.spec, plan.spec.input.size
    model = build(spec, weights=plan.weights)
    os.makedirs(config.out_dir, exist_ok=True)
    tflite = os.path.join(config.out_dir, f"{spec.name}.tflite")
    t0 = time.perf_counter()
    litert.export(model, tflite, "float32")
    export_s = time.perf_counter() - t0

    it = litert.interpreter(tflite, config.threads)
    logits = litert.predict(it, plan.images)
    keras_logits = model.predict(plan.images, verbose=0)
    max_diff = float(np.abs(logits - keras_logits).max())
    latency = litert.summarize(litert.latency(it, config.runs, warmup=WARMUP))

    labels = zoo.imagenet_labels() if spec.head.classes == 1000 else [str(i) for i in range(spec.head.classes)]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top5 = [[(int(c), labels[c], float(p[c])) for c in np.argsort(-p)[:5]] for p in probs]
    plot_path = os.path.join(config.out_dir, "predictions.png")
    plot(plan.images, plan.names, top5, plot_path)
    summary = {"model": spec.name, "weights": config.weights or None, "params": plan.cost.params,
               "macs": plan.cost.macs, "input_size": size, "tflite": tflite, "tflite_bytes": os.path.getsize(tflite),
               "export_seconds": round(export_s, 1), "tflite_vs_keras_max_abs_diff": max_diff,
               "latency_ms": {"threads": config.threads, "runs": config.runs, "median": latency["median_ms"],
                              "p10": latency["p10_ms"], "p90": latency["p90_ms"]},
               "predictions": [{"image": n, "top5": t} for n, t in zip(plan.names, top5)]}
    path = os.path.join(config.out_dir, "summary.json")
    write_json(path, summary)
    return DemoResult(summary, path, plot_path, export_s)
