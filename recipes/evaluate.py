"""Top-1 / top-5 accuracy of a spec with weights on one split of a dataset.

    python -m recipes.evaluate --model=runs/mk_8m/derived.json --weights=runs/train_mk8m/weights.npz \\
        --dataset=folder:../shared/data/cifar10_subset --json=runs/train_mk8m/eval.json
    python -m recipes.evaluate --model=efficientnet_lite0 --weights=imagenet --dataset=imagenet2012 --split=validation

The class count is the weights file's classifier width and must equal the dataset's. Images are resized on the
shorter side and centre-cropped to ``--input_size`` (default: the spec's), no augmentation; the model takes raw
0–255 RGB (its preprocessing is inside). Top-1 is the argmax, top-5 ``in_top_k`` (reported with 5 or more classes),
the same Keras metrics ``recipes.train`` reports for validation, so the same split and limit reproduce its
``val_top1``. Prints the result; ``--json`` also writes it.
"""
from __future__ import annotations

import os
import sys
import time

from absl import flags

from recipes._cli import UsageError, run
from training.distribute import STRATEGIES

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name (python -m zoo list) or path of a spec .json.")
flags.DEFINE_string("weights", None, "Weights to evaluate: a .npz path (e.g. a recipes.train weights.npz), a zoo tag "
                                     "such as 'imagenet', or '' for random init (a sanity baseline). Required.")
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder "
                                         "images) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
flags.DEFINE_string("split", "test", "Split to evaluate: 'test' (aliases 'val', 'validation'), 'train', or any "
                                     "tensorflow-datasets split string.")
flags.DEFINE_integer("input_size", None, "Square input size (default: the spec's input size).", lower_bound=8)
flags.DEFINE_integer("batch_size", 100, "Batch size (does not change the result).", lower_bound=1)
flags.DEFINE_integer("limit", None, "Evaluate only the first N examples of the split.", lower_bound=1)
flags.DEFINE_string("json", None, "Also write the result to this JSON file.")
flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy (training/distribute.py).")
flags.DEFINE_integer("cpu_replicas", 1, "With --strategy=mirrored on a host without GPUs: logical CPU devices to "
                                        "replicate over.", lower_bound=1)
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.mark_flag_as_required("model")


def _check_flags():
    """Everything checkable without TensorFlow: (spec, input size, weights path, arrays, classes)."""
    import zoo
    from inputs import classification as data
    from inputs.classification import validate
    from models.spec import check_input_size
    from training import weights as W

    spec = zoo.get_spec(FLAGS.model)
    size = FLAGS.input_size or spec.input.size
    check_input_size(spec, size, "--input_size")
    if FLAGS.weights is None:
        raise UsageError("--weights: required (a .npz path, a zoo tag such as 'imagenet', or '' for random init)")
    path = W.resolve_weights(spec, FLAGS.weights)
    arrays = W.read_weights(path) if path else None
    validate(FLAGS.dataset, FLAGS.data_dir)
    if FLAGS.split in ("test", "val", "validation"):
        data.check_eval_split(FLAGS.dataset, "--split=train")
    data_classes = data.known_classes(FLAGS.dataset)
    classes = (W.weights_classes(arrays) or spec.head.classes) if arrays is not None else data_classes
    if data_classes is not None and classes is not None and classes != data_classes:
        raise UsageError(f"--weights={FLAGS.weights}: a {classes}-class classifier, but --dataset={FLAGS.dataset} has "
                         f"{data_classes}")
    if FLAGS.strategy == "mirrored" and FLAGS.cpu_replicas > 1 and FLAGS.batch_size % FLAGS.cpu_replicas:
        raise UsageError(f"--batch_size={FLAGS.batch_size} does not split over --cpu_replicas={FLAGS.cpu_replicas}")
    if FLAGS.json is not None and os.path.isdir(FLAGS.json):
        raise UsageError(f"--json={FLAGS.json}: is a directory")
    return spec, size, path, arrays, classes


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    spec, size, path, arrays, classes = _check_flags()
    started = time.time()

    from training.distribute import make_strategy
    strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas, FLAGS.tpu)

    import keras

    import zoo
    from common import io as io_lib
    from inputs.classification import load
    from models.weights import assign, sha256

    if FLAGS.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(f"--batch_size={FLAGS.batch_size} does not split over {strategy.num_replicas_in_sync} "
                         "replicas")
    ds, info = load(FLAGS.dataset, FLAGS.split, image_size=size, batch_size=FLAGS.batch_size, training=False,
                    data_dir=FLAGS.data_dir, limit=FLAGS.limit)
    classes = classes or info.num_classes
    if classes != info.num_classes:
        raise UsageError(f"--weights={FLAGS.weights}: a {classes}-class classifier, but --dataset={FLAGS.dataset} has "
                         f"{info.num_classes}")
    with strategy.scope():
        model = zoo.build(FLAGS.model, weights=None, classes=classes, input_size=size)
        if arrays is not None:
            assign(model, arrays, source=path)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1")]
        if classes >= 5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"))
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=metrics)
    result = model.evaluate(ds, verbose=0, return_dict=True)
    out = {"model": spec.name, "weights": FLAGS.weights, "weights_path": path,
           "weights_sha256": sha256(path) if path else None, "dataset": FLAGS.dataset, "split": FLAGS.split,
           "limit": FLAGS.limit, "examples": info.num_examples, "input_size": size, "classes": classes,
           "top1": float(result["top1"]), "loss": float(result["loss"])}
    if "top5" in result:
        out["top5"] = float(result["top5"])
    out["wall_time_s"] = round(time.time() - started, 3)
    if FLAGS.json:
        io_lib.write_json(FLAGS.json, out)
    top5 = f"  top-5 {out['top5']:.4f}" if "top5" in out else ""
    print(f"{spec.name} on {FLAGS.dataset} {FLAGS.split} ({info.num_examples} examples, {size}x{size}): "
          f"top-1 {out['top1']:.4f}{top5}")
    sys.stdout.flush()


if __name__ == "__main__":
    run(main)
