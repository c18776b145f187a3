"""tensorflow-datasets names as a data source of `inputs.classification.load`: the split (``holdout``: the last
part of ``train``), the limit, grayscale to RGB, and a data set not prepared under ``--data_dir`` on a host that
cannot reach tfds' download mirror refused at once (offline, tfds retries its downloads for minutes)."""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from inputs.classification import DataError, _holdout_count, _Source

if TYPE_CHECKING:
    import tensorflow as tf

TFDS_HOST = "storage.googleapis.com"  # tfds downloads prepared data from its GCS mirror first


def _check_downloadable(tfds, name: str, data_dir: str | None) -> None:
    """DataError when ``name`` is not prepared under ``data_dir`` and the download host is unreachable: offline,
    tfds would retry its downloads for minutes before failing. A name tfds does not know passes through (its
    ``DatasetNotFoundError`` comes from ``tfds.load``); behind a proxy (``HTTPS_PROXY``/``ALL_PROXY``), whose direct
    connection test would say nothing, tfds is left to try."""
    try:
        with _quiet_absl():  # "Variant folder … has no dataset_info.json" for a data set not prepared yet
            builder = tfds.builder(name, data_dir=data_dir)
            prepared = builder.is_prepared()
    except tfds.core.DatasetNotFoundError:
        return
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if not prepared and not proxied and not _reachable(TFDS_HOST):
        raise DataError(f"{name}: not prepared under {builder.data_dir} and {TFDS_HOST} is unreachable, so it "
                        f"cannot be downloaded; prepare it where there is internet (tfds build {name}) and pass "
                        "--data_dir")


@contextlib.contextmanager
def _quiet_absl():
    """absl's Python logger at ERROR inside (tfds warns through it), restored after."""
    from absl import logging as absl_logging
    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)


def _reachable(host: str, port: int = 443, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (name lookup included)."""
    import socket
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tfds_source(name: str, split: str, holdout: float, limit: int | None, data_dir: str | None) -> _Source:
    import tensorflow_datasets as tfds
    base = "train" if split == "holdout" else split
    try:
        _check_downloadable(tfds, name, data_dir)
        examples, info = tfds.load(name, split=base, data_dir=data_dir, as_supervised=True, with_info=True)
    except DataError:
        raise
    except tfds.core.DatasetNotFoundError:
        raise DataError(f"dataset {name!r}: not 'shapes', 'folder:PATH', 'tsv:PATH' or a tensorflow-datasets "
                        "name") from None
    except Exception as e:  # noqa: BLE001 — tfds fails in many ways (network, missing files); report them as one line
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataError(f"{name}: tensorflow-datasets cannot load split {base!r} ({type(e).__name__}: {reason}); "
                        f"without internet, prepare it elsewhere and pass --data_dir") from None
    label = info.features[info.supervised_keys[1]]
    if not hasattr(label, "names"):
        raise DataError(f"{name}: labels are not classes")
    n = info.splits[base].num_examples
    if holdout > 0.0 and split in ("train", "holdout"):
        n_train = n - _holdout_count(n, holdout, name)
        examples, n = (examples.skip(n_train), n - n_train) if split == "holdout" else (examples.take(n_train), n_train)
    if limit is not None:
        examples, n = examples.take(limit), min(n, limit)
    return _Source(examples, _to_rgb, tuple(label.names), n)


def _to_rgb(image: "tf.Tensor") -> "tf.Tensor":
    import tensorflow as tf
    channels = image.shape[-1]
    return tf.image.grayscale_to_rgb(image) if channels == 1 else image[..., :3]
