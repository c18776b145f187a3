"""Top-1 / top-5 accuracy of a spec with weights on one split of a dataset (``python -m recipes.evaluate``): the
config, its TensorFlow-free validation, and the run (the same Keras metrics ``workflows.train`` reports for
validation, under a tf.distribute strategy)."""
from __future__ import annotations

import dataclasses
import time

from common.checks import (
    ConfigError,
    check_activation_memory,
    check_at_least,
    check_one_of,
    check_replicas,
    check_rgb_spec,
    check_writable,
)
from training.distribute import STRATEGIES


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """One evaluation; the fields are the flags of ``recipes.evaluate``. ``weights`` None is refused (required)."""

    model: str
    weights: str | None = None
    dataset: str = "shapes"
    data_dir: str | None = None
    on_bad_image: str = "raise"  # folder: images that cannot be decoded: raise (naming the file) or skip
    split: str = "test"
    input_size: int | None = None
    batch_size: int = 100
    limit: int | None = None
    json: str | None = None
    strategy: str = "default"
    cpu_replicas: int = 1
    tpu: str = ""
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class EvaluatePlan:
    spec: object
    size: int
    weights_path: str | None
    arrays: dict | None
    classes: int | None
    class_names: list | None = None  # the weights' card's, when it lists them


def validate(config: EvaluateConfig) -> EvaluatePlan:
    """Everything checkable without TensorFlow.

    Raises:
        InputError (subclasses): a bad value, named by its flag.
    """
    import zoo
    from inputs import classification as data
    from models.spec import check_input_size
    from training import weights as W

    check_at_least(input_size=(config.input_size, 8), batch_size=(config.batch_size, 1), limit=(config.limit, 1),
                   cpu_replicas=(config.cpu_replicas, 1))
    spec = zoo.get_spec(config.model)
    if config.weights is None:
        raise ConfigError("--weights: required (a .npz path, a zoo tag such as 'imagenet', or '' for random init)")
    path = W.resolve_weights(spec, config.weights)
    # the input size the weights were trained at (their model card), unless --input_size says otherwise
    size = config.input_size or W.card_input_size(W.weights_card(spec, config.weights, path)) or spec.input.size
    check_input_size(spec, size, "--input_size")
    check_activation_memory(spec, size, config.batch_size)
    check_rgb_spec(spec)
    arrays = W.read_weights(path) if path else None
    data.validate(config.dataset, config.data_dir, config.on_bad_image)
    if config.split == "holdout":  # a training-time split (a search's α data); evaluate has no --holdout
        raise ConfigError("--split=holdout: the held-out part of the training data exists only inside a search or "
                          "training run; evaluate train, test or a tensorflow-datasets split")
    if config.split in data.EVAL_SPLITS:
        data.check_eval_split(config.dataset, "pass --split=train")
    card = W.weights_card(spec, config.weights, path) if path else {}
    trained_names = card.get("class_names") if isinstance(card.get("class_names"), list) else None
    W.check_class_names(trained_names, data.known_class_names(config.dataset), f"--dataset={config.dataset}")
    data_classes = data.known_classes(config.dataset)
    classes = (W.weights_classes(arrays) or spec.head.classes) if arrays is not None else data_classes
    if data_classes is not None and classes is not None and classes != data_classes:
        raise ConfigError(f"--weights={config.weights}: a {classes}-class classifier, but --dataset={config.dataset} "
                          f"has {data_classes}")
    check_one_of(strategy=(config.strategy, STRATEGIES))
    check_replicas(config.strategy, config.cpu_replicas, config.batch_size)
    if config.json is not None:
        check_writable(config.json, "--json", model=zoo.spec_path(config.model), weights=path)
    return EvaluatePlan(spec, size, path, arrays, classes, trained_names)


def run(config: EvaluateConfig) -> dict:
    """Validates ``config`` (before TensorFlow is imported) and evaluates; returns the result (also written to
    ``config.json`` when set): model, weights and their sha256, data, ``examples``, ``top1``, ``loss``, ``top5``
    (5 or more classes)."""
    plan = validate(config)
    started = time.time()

    from training.distribute import make_strategy
    strategy = make_strategy(config.strategy, config.cpu_replicas, config.tpu)

    import keras

    import zoo
    from common.io import write_json
    from inputs.classification import load
    from models.weights import assign, sha256

    if config.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"--batch_size={config.batch_size} does not split over {strategy.num_replicas_in_sync} "
                          "replicas")
    ds, info = load(config.dataset, config.split, image_size=plan.size, batch_size=config.batch_size,
                    training=False, data_dir=config.data_dir, limit=config.limit, on_bad_image=config.on_bad_image)
    classes = plan.classes or info.num_classes
    from training.weights import check_class_names
    check_class_names(plan.class_names, info.class_names, f"--dataset={config.dataset}")  # tfds: known only now
    if classes != info.num_classes:
        raise ConfigError(f"--weights={config.weights}: a {classes}-class classifier, but --dataset={config.dataset} "
                          f"has {info.num_classes}")
    with strategy.scope():
        model = zoo.build(config.model, weights=None, classes=classes, input_size=plan.size)
        if plan.arrays is not None:
            assign(model, plan.arrays, source=plan.weights_path, strict=True)
        # weighted: a last batch padded to split over the replicas (pad_for_replicas) counts its real rows only;
        # "ce" is the reported loss (Keras' own loss would average over the padding rows too)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1"),
                   keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="ce")]
        if classes >= 5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"))
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=metrics)
    from training.distribute import pad_for_replicas
    ds = pad_for_replicas(ds, strategy.num_replicas_in_sync)
    from common.io import keras_verbose
    # On a terminal, Keras' bar over the split's batches; a log gets nothing until the result (verbose 2 would
    # print one line at the end, which the recipe prints anyway).
    result = model.evaluate(ds, verbose=keras_verbose(config.progress) % 2, return_dict=True)
    path = plan.weights_path
    out = {"model": plan.spec.name, "weights": config.weights, "weights_path": path,
           "weights_sha256": sha256(path) if path else None, "dataset": config.dataset, "split": config.split,
           "limit": config.limit, "examples": info.num_examples, "input_size": plan.size, "classes": classes,
           "top1": float(result["top1"]), "loss": float(result["ce"])}
    if "top5" in result:
        out["top5"] = float(result["top5"])
    out["wall_time_s"] = round(time.time() - started, 3)
    if config.json:
        write_json(config.json, out)
    return out
