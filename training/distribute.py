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
