"""tf.distribute strategies chosen by flag (DESIGN.md §6): ``default``, ``mirrored``, ``multi_worker``, ``tpu``.

``mirrored`` replicates over the local GPUs; on a CPU-only host ``cpu_replicas`` > 1 first splits the CPU into that
many logical devices (how the tests prove data-parallel training on two "devices" without a GPU).
``multi_worker`` reads the cluster from ``TF_CONFIG``; ``tpu`` connects to ``tpu`` (a name or grpc address, or the
local TPU when empty).
"""
from __future__ import annotations

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str, cpu_replicas: int = 1, tpu: str = ""):
    """Returns the strategy; call before any other TensorFlow work (logical devices are fixed at start-up)."""
    import tensorflow as tf
    if name not in STRATEGIES:
        raise ValueError(f"--strategy: one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus or cpu_replicas <= 1:
            return tf.distribute.MirroredStrategy()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        from common.errors import InputError
        where = f"--tpu={tpu}" if tpu else "no --tpu given and no local TPU"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"--strategy=tpu: cannot reach a TPU ({where}: {first}); pass --tpu=NAME|grpc://ADDRESS "
                         "on a TPU host, or use --strategy=default") from None
    return tf.distribute.TPUStrategy(resolver)


def prepare_fit(model, strategy) -> None:
    """Makes ``model.fit`` work under a multi-worker strategy (call after ``compile``); a no-op otherwise.

    Keras 3 (checked with 3.15; keras-team/keras#20585, open) breaks ``fit`` under ``MultiWorkerMirroredStrategy``
    twice, and this mends both for the pinned version:

    * before the first step it builds the optimizer and metrics from one batch whose replicas it merges with
      ``strategy.reduce("MEAN", (x, y), axis=None)``, which a multi-worker strategy cannot do for a nest of
      per-replica values ("Attempt to convert a value (PerReplica…) to a Tensor"). Only shapes and dtypes matter
      there, so this model's hook takes the local replica's values instead;
    * every step it averages the per-replica logs over workers with ``axis=0``, which fails for the scalar loss and
      metric results ("Invalid reduction dimension 0 for input with 0 dimensions"). Scalars are averaged across
      replicas with ``axis=None`` (what "mean over replicas" means for a scalar); everything else is left to Keras.
    """
    import tensorflow as tf
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer
    build = model._maybe_symbolic_build

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, it in iterator:  # the same draw Keras makes (one batch of the epoch iterator)
                data_batch = tf.nest.map_structure(local, next(it))
                break
            return build(iterator=None, data_batch=data_batch)
        return build(iterator=iterator, data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
    if getattr(tf_trainer.reduce_per_replica, "mends_multi_worker", False):
        return
    keras_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        def one(v):
            # one local replica: in a traced step the values are plain tensors, not PerReplica
            if (reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                    and local(v).shape.rank == 0):
                return strategy.reduce("MEAN", v, axis=None)
            return keras_reduce(v, strategy, reduction)
        return tf.nest.map_structure(one, values)

    reduce_per_replica.mends_multi_worker = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def pad_for_replicas(ds, replicas: int):
    """``ds`` of ``(x, y)`` batches as ``(x, y, weight)``, every batch's rows weight 1, and a batch that does not split
    evenly over ``replicas`` (the last, partial one) padded with zero rows of weight 0 up to a multiple of
    ``replicas``: tf.distribute otherwise gives the replicas unequal shards, which fails in an ``AddN`` (``[3,32,32,3]
    != [2,32,32,3]``). Metrics must be compiled as ``weighted_metrics`` so that the padding never counts; Keras'
    own ``loss`` averages over the padded rows too, so report a weighted cross-entropy metric instead."""
    import tensorflow as tf
    if replicas <= 1:
        return ds

    def pad(x, y):
        n = tf.shape(x)[0]
        p = tf.math.floormod(-n, replicas)
        x = tf.concat([x, tf.zeros(tf.concat([[p], tf.shape(x)[1:]], 0), x.dtype)], 0)
        y = tf.concat([y, tf.zeros(tf.concat([[p], tf.shape(y)[1:]], 0), y.dtype)], 0)
        return x, y, tf.concat([tf.ones([n]), tf.zeros([p])], 0)
    return ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE)


def padded_loss_scale(examples: int, batch_size: int, replicas: int) -> float:
    """The factor that turns Keras' loss over a `pad_for_replicas` dataset of ``examples`` rows into the mean over
    the real rows: Keras averages each batch's loss over all its rows, padding included, and weights batches by
    their row counts, so it reports Σ loss / (examples + padding). 1.0 when nothing is padded."""
    if replicas <= 1 or examples <= 0:
        return 1.0
    last = examples % batch_size or batch_size
    return (examples + (-last) % replicas) / examples


def rescale_val_loss(scale: float):
    """A Keras callback (first in the list, so every later callback and the history see the exact value) that
    multiplies each epoch's ``val_loss`` by ``scale`` (`padded_loss_scale`)."""
    import keras

    class RescaleValLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None and "val_loss" in logs:
                logs["val_loss"] = float(logs["val_loss"]) * scale
    return RescaleValLoss()
