"""Reading photos for classification demos and checks (the tf.data pipelines of the recipes issue build on tf.image)."""
from __future__ import annotations

import glob
import os

import numpy as np


def list_image_files(paths) -> list[str]:
    """Files named in ``paths``, a directory contributing its files in sorted order.

    Raises:
        FileNotFoundError: a path that is neither a file nor a directory (the message names it).
    """
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(f for f in glob.glob(os.path.join(p, "*")) if os.path.isfile(f))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return files


def load_center_crop(path: str, size: int) -> np.ndarray:
    """One image as (size, size, 3) float32 0–255 RGB: short side resized to ``size`` (bicubic), centre-cropped.

    Raises:
        OSError: the file cannot be read as an image (PIL's UnidentifiedImageError is an OSError).
    """
    from PIL import Image
    img = Image.open(path).convert("RGB")
    scale = size / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype="float32")
