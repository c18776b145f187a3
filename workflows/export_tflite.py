"""Export of a zoo model to TFLite (float32, float16, dynamic-range or full-integer int8) and its LiteRT check
(``python -m recipes.export_tflite``): the config, its TensorFlow-free validation, and the run (conversion in
`export.litert`). Writes the ``.tflite`` and its report ``<output>.json``, both atomically.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time

from common.checks import ConfigError, check_at_least, check_one_of, check_rgb_spec, check_writable
from training.weights import card_class_names, card_input_size, checked_weights_file, resolve_weights, weights_card

MODE_TEXT = {"float32": "float32", "float16": "float16 weights", "dynamic": "dynamic-range (int8 weights)",
             "int8": "full-integer int8",
             "mixed": "mixed precision per block (int8 / int16x8 / float, the spec's bits)"}
EXPORT_MODES = (*MODE_TEXT,)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """One export; the fields are the flags of ``recipes.export_tflite`` (see its ``--help``)."""

    model: str
    weights: str = "imagenet"
    mode: str = "float32"
    int8_io: bool = False
    dataset: str = "shapes"
    data_dir: str | None = None
    on_bad_image: str = "raise"  # folder: images that cannot be decoded: raise (naming the file) or skip
    representative_split: str = "train"
    representative_steps: int = 100
    check_split: str = "test"
    check_examples: int = 100
    input_size: int | None = None
    classes: int | None = None
    output: str | None = None
    out_dir: str = "runs/export"
    preprocessing: str = "fold"  # fold into the stem conv | layer (the preprocess layer) | none (normalised input)
    mixed_default: str | None = None  # --mode=mixed only: the stem's, head's and bit-less blocks' precision (int8)


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    spec: object
    size: int
    classes: int
    cost: object
    weights: str | None
    output: str
    report_path: str
    labels: list | None  # class names from the weights' model card
    card: dict


@dataclasses.dataclass(frozen=True)
class ExportResult:
    report: dict
    output: str
    report_path: str
    export_seconds: float  # unrounded (the report holds it rounded)


def validate(config: ExportConfig) -> ExportPlan:
    """Everything checkable without TensorFlow.

    Raises:
        InputError (subclasses): a bad value, named by its flag.
    """
    import zoo
    from inputs import classification as data
    from models.counting import count

    check_at_least(representative_steps=(config.representative_steps, 1), check_examples=(config.check_examples, 0),
                   input_size=(config.input_size, 8), classes=(config.classes, 1))
    if config.mode not in EXPORT_MODES:
        raise ConfigError(f"--mode={config.mode}: one of {', '.join(EXPORT_MODES)}")
    from export.mixed_precision import PRECISIONS
    if config.mixed_default is not None:
        check_one_of(mixed_default=(config.mixed_default, PRECISIONS))
    from export.fold import FOLD_MODES
    check_one_of(preprocessing=(config.preprocessing, FOLD_MODES))
    spec = zoo.get_spec(config.model)
    check_rgb_spec(spec)  # calibration and the parity check read RGB images
    # The card beside the weights (or the zoo's) gives the size and classes they were trained at.
    card = weights_card(spec, config.weights, resolve_weights(spec, config.weights))
    size = config.input_size or card_input_size(card) or spec.input.size
    classes = config.classes or _weights_width(spec, config.weights) or spec.head.classes
    cost = count(spec, size, classes=classes)  # SpecError if the input size does not fit the network
    weights = checked_weights_file(spec, config.weights, classes)
    data.validate(config.dataset, config.data_dir, config.on_bad_image)
    mode = config.mode
    if mode == "mixed" and config.preprocessing == "layer":
        raise ConfigError("--mode=mixed splits the network into stem, blocks and head: use --preprocessing=fold, "
                          "fold_black or none")
    from export.fold import stem_padding
    if mode == "mixed" and config.preprocessing == "fold" and spec.input.border != "black" \
            and len(set(spec.input.mean)) == 1 and any(stem_padding(spec, size)):
        # one mean for every channel folds into a PADV2 whose float constant the mixed splice leaves in its int8
        # stem, which LiteRT refuses ("PADV2 … INT8 != FLOAT32"); per-channel means fold into PAD + ADD, which works
        raise ConfigError(f"--mode=mixed with --preprocessing=fold: {spec.name}'s one input mean folds into a PADV2 "
                          "that the mixed-precision splice cannot quantize; use --preprocessing=fold_black (the "
                          "border as raw black) or none")
    if config.mixed_default is not None and mode != "mixed":
        raise ConfigError(f"--mixed_default={config.mixed_default} needs --mode=mixed (got --mode={mode})")
    if config.int8_io and mode != "int8":
        raise ConfigError(f"--int8_io needs --mode=int8 (got --mode={mode})")
    output = config.output or os.path.join(
        config.out_dir, f"{spec.name}-{weights_label(config.weights)}-{mode}{'_io' if config.int8_io else ''}.tflite")
    if not output.endswith(".tflite"):
        raise ConfigError(f"--output {output}: must end with .tflite")
    report_path = output + ".json"
    check_writable(output, "--output", model=zoo.spec_path(config.model), weights=weights)
    check_writable(report_path, "--output", model=zoo.spec_path(config.model), weights=weights)
    return ExportPlan(spec, size, classes, cost, weights, output, report_path, card_class_names(card, classes), card)


def _weights_width(spec, value: str) -> int | None:
    """The classifier width of the weights (so a run on another class count needs no ``--classes``)."""
    from training.weights import read_weights, weights_classes
    path = resolve_weights(spec, value)
    return weights_classes(read_weights(path)) if path else None


def normalise(spec, images):
    """``(images − mean) / std`` with the spec's statistics: the input of a ``--preprocessing=none`` export."""
    import numpy as np
    return ((images - np.asarray(spec.input.mean, np.float32)) / np.asarray(spec.input.std, np.float32)).astype(
        np.float32)


def input_quantization(config: ExportConfig, plan: ExportPlan) -> tuple[float, int] | None:
    """``(scale, zero_point)`` when the file's int8 input itself carries the normalisation (``--int8_io`` with
    ``--preprocessing=fold`` and one integral mean/std for all channels: `export.fold.int8_input_quantization`),
    else None."""
    if config.mode != "int8" or not config.int8_io or config.preprocessing not in ("fold", "fold_black"):
        return None
    from export.fold import deploy_spec, int8_input_quantization
    return int8_input_quantization(deploy_spec(plan.spec, config.preprocessing))


def metadata(config: ExportConfig, plan: ExportPlan) -> dict:
    """What a deployment needs besides the graph, embedded in the ``.tflite`` (`export.litert.add_metadata`) and
    repeated in the report: the input it expects, the normalisation, the labels and where the weights came from."""
    spec = plan.spec
    if input_quantization(config, plan):
        what = "int8 pixel − 128 (the input's quantization is the normalisation)"
    elif config.int8_io and config.mode == "int8":
        what = ("int8: round(x / scale + zero_point) of the " + ("raw 0–255 pixels" if config.preprocessing != "none"
                else "normalised pixels") + ", with the input's scale and zero point")
    elif config.preprocessing != "none":
        what = "RGB pixels 0–255 (normalisation inside the model)"
    else:
        what = "RGB normalised as (pixel − mean) / std"
    return {"model": spec.name, "weights": config.weights or None,
            "weights_sha256": plan.card.get("sha256"), "input_size": plan.size, "channels": spec.input.channels,
            "input": what,
            "mean": list(spec.input.mean), "std": list(spec.input.std), "preprocessing": config.preprocessing,
            "output": "logits", "classes": plan.classes, "labels": plan.labels}


def weights_label(weights: str) -> str:
    """The weights' part of a default export name, so that exports of one model with other weights do not
    overwrite each other: the zoo tag, ``random`` for no weights, or a ``.npz`` path's folder and stem
    (``runs/train/a/weights.npz`` → ``a_weights``), with anything but ``[A-Za-z0-9_.]`` replaced by ``_``."""
    if not weights:
        return "random"
    if weights.endswith(".npz") or os.sep in weights:
        path = os.path.abspath(weights)
        parent = os.path.basename(os.path.dirname(path))
        stem = os.path.splitext(os.path.basename(path))[0]
        weights = f"{parent}_{stem}" if parent else stem
    return re.sub(r"[^A-Za-z0-9_.]", "_", weights)[:80]


def _arrays(config: ExportConfig, split, size, limit, flag):
    """(images float32 0–255, labels int32, DataInfo) of the first ``limit`` examples of a split."""
    import numpy as np

    from inputs import classification as data
    try:
        ds, info = data.load(config.dataset, split, image_size=size, batch_size=32, training=False,
                             data_dir=config.data_dir, limit=limit, on_bad_image=config.on_bad_image)
        batches = list(ds.as_numpy_iterator())
    except data.DataError as e:
        raise ConfigError(f"{flag}: {e}") from None
    if not batches:
        raise ConfigError(f"{flag}: {config.dataset} split {split!r} is empty")
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), info


def _parity(config: ExportConfig, model, it, check, classes: int, feed, labels=None) -> dict:
    """LiteRT vs the zoo's Keras model (preprocess layer included, raw pixels) on the check images: max|Δ| of the
    logits, top-1 agreement, and both accuracies when the labels match the classifier. ``feed`` gives the file's
    input (normalised images for ``--preprocessing=none``)."""
    import numpy as np

    from export import litert
    images, labels_y, info = check
    ref = model.predict(images, batch_size=32, verbose=0)
    got = litert.predict(it, feed(images))
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    parity = {"dataset": config.dataset, "split": config.check_split, "examples": int(len(images)),
              "max_abs_diff": diff, "max_abs_keras_logit": scale,
              "relative_max_abs_diff": diff / scale if scale > 0 else None,
              "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
              "accuracy": None}
    names = list(getattr(info, "class_names", None) or [])
    if labels and names and list(labels) != names:  # same count, other classes (e.g. shapes vs cifar10 weights)
        parity["accuracy_note"] = (f"not scored: the weights' classes ({', '.join(map(str, labels[:3]))}, …) are not "
                                   f"the data's ({', '.join(names[:3])}, …)")
    elif info.num_classes == classes:  # labels are comparable with the classifier's outputs
        parity["accuracy"] = {"keras": float((ref.argmax(-1) == labels_y).mean()),
                              "litert": float((got.argmax(-1) == labels_y).mean())}
    return parity


def run(config: ExportConfig) -> ExportResult:
    """Validates ``config`` (before TensorFlow is imported), exports, checks the file with LiteRT, writes the
    report."""
    plan = validate(config)
    import zoo
    from common.io import eprint, write_json
    from export import litert
    from models.builder import build
    from search import tflite_timing

    mode, size = config.mode, plan.size
    t0 = time.perf_counter()
    model = build(plan.spec, weights=plan.weights, input_size=size, classes=plan.classes)
    deployed = model  # the graph written to the file; ``model`` stays the zoo model the parity check compares with
    in_quant = input_quantization(config, plan)
    from export.fold import deploy_spec
    target = deploy_spec(plan.spec, config.preprocessing)  # fold_black: the border as raw black
    # an int8 input whose quantization is the normalisation reads normalised pixels, but with a black border the
    # folded graph's raw pixels (its stem normalises)
    normalised = config.preprocessing == "none" or (in_quant is not None and target.input.border != "black")
    if normalised:
        deployed = build(plan.spec, input_size=size, classes=plan.classes, include_preprocessing=False)
        deployed.set_weights(model.get_weights())
    elif config.preprocessing in ("fold", "fold_black"):
        from export.fold import fold_preprocessing
        deployed = fold_preprocessing(model, target, size)
    feed = (lambda x: normalise(plan.spec, x)) if normalised else (lambda x: x)  # noqa: E731

    representative = None
    if mode in ("int8", "mixed"):
        calib, _, _ = _arrays(config, config.representative_split, size, config.representative_steps,
                              "--representative_split")
        eprint(f"int8 calibration: {len(calib)} images of {config.dataset} split {config.representative_split!r}"
               + (" (the built-in synthetic set: give --dataset=<your data> for activation ranges of real images)"
                  if config.dataset == "shapes" else ""))

        if in_quant:  # a black and a white image pin the input range to the normalisation's exact span
            import numpy as np
            calib = np.concatenate([np.zeros_like(calib[:1]), np.full_like(calib[:1], 255.0), calib])

        def representative():
            for x in feed(calib):
                yield [x[None]]
    check = None
    if config.check_examples:
        check = _arrays(config, config.check_split, size, config.check_examples, "--check_split")

    eprint(f"converting {plan.spec.name} to LiteRT ({mode}) …")
    meta = metadata(config, plan)
    mixed = None
    if mode == "mixed":
        from common.io import atomic_write
        from common.quiet_tf import filtered_stderr
        from export import mixed_precision
        precision = mixed_precision.spec_plan(target, config.mixed_default or "int8")
        with filtered_stderr():
            data, mixed = mixed_precision.convert_mixed(deployed, precision, representative)
        data = litert.add_metadata(data, meta)
        atomic_write(plan.output, lambda f: f.write(data))
        nbytes = len(data)
    else:
        nbytes = litert.export(deployed, plan.output, mode, representative, config.int8_io, metadata=meta)
    export_s = time.perf_counter() - t0
    ops = litert.op_counts(plan.output)
    try:
        it = litert.interpreter(plan.output)
    except Exception:  # a file the runtime cannot load is not left behind as if it were an export
        os.remove(plan.output)
        raise
    io = litert.io_details(it)
    if in_quant:  # calibration on [0, 255] gives exactly (1/std, mean − 128) or (1, −128): checked, never rewritten
        q = io["input"]["quantization"] or {}
        if not (abs(q.get("scale", 0.0) - in_quant[0]) <= 1e-9 * in_quant[0] and q.get("zero_point") == in_quant[1]):
            raise RuntimeError(f"int8 input quantization {q} is not the normalisation {in_quant}: the converter "
                               "calibrated another range")
    if check is not None:
        eprint(f"LiteRT vs Keras on {len(check[0])} images of {config.dataset} split {config.check_split!r} …")
    # the card's own class list (not the "imagenet" marker, whose readable labels differ from tfds' WordNet ids)
    trained_on = plan.labels if isinstance(plan.card.get("class_names"), list) else None
    parity = _parity(config, model, it, check, plan.classes, feed, trained_on) if check is not None else None

    report = {
        "model": plan.spec.name, "spec": zoo.spec_path(config.model), "weights": config.weights or None,
        "weights_file": plan.weights, "input_size": size,
        "classes": plan.classes, "params": plan.cost.params, "macs": plan.cost.macs,
        "mode": mode, "int8_io": config.int8_io, "tflite": plan.output, "file_bytes": nbytes,
        "preprocessing": config.preprocessing, "metadata": meta,
        "ops": sorted(ops), "op_counts": ops,
        "input_dtype": io["input"]["dtype"], "output_dtype": io["output"]["dtype"], "io": io,
        "representative": ({"dataset": config.dataset, "split": config.representative_split,
                            "steps": config.representative_steps, "images": int(len(calib)),
                            "synthetic": config.dataset == "shapes"} if mode in ("int8", "mixed") else None),
        "mixed_precision": mixed,
        "parity": parity, "export_seconds": round(export_s, 2), "versions": tflite_timing.versions(
            "keras", "tensorflow", "ai-edge-litert"),
    }
    write_json(plan.report_path, report)
    return ExportResult(report, plan.output, plan.report_path, export_s)
