"""Architecture search: supernets (meta-kernel, single-path one-shot), their strategies and cost models.

Every supernet offers the same small interface (:mod:`search.protocol`). Every serializable search layer is
registered under one Keras package name, :data:`PACKAGE`. Importing this package does not import TensorFlow.
"""

PACKAGE = "nas_zoo"  # keras.saving.register_keras_serializable(package=PACKAGE) for every search layer


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds a channel count to a multiple of ``divisor`` without dropping more than 10% (MobileNet convention)."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)
