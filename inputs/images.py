"""Reading photos for classification demos and checks (the tf.data pipelines of the recipes issue build on tf.image)."""
from __future__ import annotations

import glob
import os

import numpy as np


def list_image_files(paths) -> list[str]:
    """Files named in ``paths``, a directory contributing its entries other than subdirectories in sorted order.

    Entries that are not regular files (a broken or looping symbolic link, a FIFO, a socket, a device) are listed
    too, so that the reader names them (`file_problem`) instead of leaving them out without a word.

    Raises:
        FileNotFoundError: a path that does not exist, not even as a (broken) link (the message names it).
    """
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(f for f in glob.glob(os.path.join(glob.escape(p), "*")) if not os.path.isdir(f))
        elif os.path.lexists(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return files


def file_problem(path: str) -> str | None:
    """None when ``path`` is (or links to) a regular file, else what it is, for a message: ``a broken symbolic link
    (to …)``, ``a symbolic link loop``, ``a FIFO (named pipe), not a regular file``, ``cannot read (…)``, ….
    Opening a FIFO would block: readers of user files call this first."""
    import errno
    import stat
    try:
        st = os.stat(path)
    except OSError as e:
        if os.path.islink(path) and e.errno == errno.ELOOP:
            return "a symbolic link loop"
        if os.path.islink(path) and e.errno == errno.ENOENT:
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"a broken symbolic link (to {target})"
        return f"cannot read ({e.strerror})"
    if stat.S_ISREG(st.st_mode):
        return None
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    what = next((name for test, name in kinds if test(st.st_mode)), "a special file")
    return f"{what}, not a regular file"


def _reason(e: BaseException) -> str:
    """``Type: first line`` of a decoder's exception, for one-line messages."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else 'cannot decode'}"


def to_rgb8(img):
    """A PIL image as 8-bit RGB the way TensorFlow's decoders and ``tf.image.convert_image_dtype`` scale it.

    ``convert("RGB")`` clips wide integer and float modes instead of scaling them (a 16-bit grayscale PNG, mode
    ``I;16``, comes out solid white). Here 16-bit values keep their high byte (``v >> 8``, what ``tf.io.decode_png``
    gives at uint8; a PNG's ``I`` mode is 16-bit too), other 32-bit integers (``I``) ``v >> 23`` (negatives 0) and
    floats (``F``) ``clip(v, 0, 1) · 255.5`` truncated (NaN 0). Other modes: ``convert("RGB")`` (16-bit RGB and
    gray+alpha PNGs already open as 8-bit, as TensorFlow decodes them).
    """
    from PIL import Image
    mode = img.mode
    if mode.startswith("I;16") or (mode == "I" and img.format == "PNG"):
        gray = (np.asarray(img).astype(np.int64) >> 8).clip(0, 255)
    elif mode == "I":
        gray = np.asarray(img).astype(np.int64).clip(0, None) >> 23
    elif mode == "F":
        gray = np.clip(np.nan_to_num(np.asarray(img, np.float64), nan=0.0), 0.0, 1.0) * 255.5
    else:
        return img.convert("RGB")
    return Image.fromarray(np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1), "RGB")


def load_center_crop(path: str, size: int) -> np.ndarray:
    """One image as (size, size, 3) float32 0–255 RGB: short side resized to ``size`` (bicubic), centre-cropped.
    Wide modes (16-bit, 32-bit, float) are scaled to 8 bits as TensorFlow decodes them (`to_rgb8`).

    Raises:
        DataError (an InputError): one line naming the file: not a regular file (`file_problem`), or anything PIL
            raises while decoding it (OSError, UnidentifiedImageError, ValueError, SyntaxError,
            DecompressionBombError, …).
    """
    from PIL import Image

    from common.errors import DataError
    problem = file_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    import warnings
    try:  # 89–179 megapixels: PIL warns and loads (a large photo, legitimate); beyond, DecompressionBombError
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                img = to_rgb8(im)
    except Exception as e:  # noqa: BLE001 — PIL raises OSError, SyntaxError, ValueError, … for broken files
        raise DataError(f"{path}: not a decodable image ({_reason(e)})") from None
    scale = size / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype="float32")


CACHE_ENV = "NAS_ZOO_CACHE"  # directory of the verified-image manifests (default ~/.cache/nas_zoo)
BAD_IMAGE_POLICIES = ("raise", "skip")


VERIFY_VERSION = 2  # what _decode_problem checks; a new check must not trust manifests of the old one (v2: BMP depth)


def _manifest_path(directory: str) -> str:
    import hashlib
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "nas_zoo")
    key = hashlib.sha1(os.path.abspath(directory).encode()).hexdigest()[:20]
    return os.path.join(root, f"verified_images_v{VERIFY_VERSION}", f"{key}.json")


def _decode_problem(path: str) -> str | None:
    """None when PIL verifies ``path`` (chunk checksums, completeness) and decodes every pixel, else the reason."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.verify()  # checksums and structure (a PNG with a bad IDAT CRC or no IEND passes load() alone)
        with Image.open(path) as im:
            im.load()  # every pixel (a JPEG cut short passes verify())
            fmt = im.format
    except Exception as e:  # noqa: BLE001 — PIL raises OSError, SyntaxError, ValueError, … for broken files
        return _reason(e)
    return _bmp_problem(path) if fmt == "BMP" else None


def _bmp_problem(path: str) -> str | None:
    """What TensorFlow's BMP decoder cannot read although PIL can: it takes uncompressed 24- and 32-bit pixels only
    (1-, 4- and 16-bit files fail inside tf.data; an 8-bit palette file would decode as its palette indices)."""
    import struct
    with open(path, "rb") as f:
        head = f.read(34)
    if len(head) < 34:
        return "BMP header cut short"
    if struct.unpack_from("<I", head, 14)[0] < 40:  # OS/2 BITMAPCOREHEADER: TensorFlow reads its sizes wrongly
        return "an OS/2 BMP (12-byte header): TensorFlow cannot read it; convert it to PNG"
    bits, compression = struct.unpack_from("<H", head, 28)[0], struct.unpack_from("<I", head, 30)[0]
    if bits not in (24, 32) or compression not in (0, 3):
        return (f"a {bits}-bit BMP (compression {compression}): TensorFlow decodes uncompressed 24- and 32-bit BMPs "
                "only; convert it to PNG")
    return None


_MEMO: dict[tuple, str | None] = {}  # (path, size, mtime) → problem: one decode per process even without a cache


def verify_images(files: list[str]) -> list[tuple[str, str]]:
    """Decodes every image in full (PIL) and returns ``(path, reason)`` for those that fail — a truncated or
    corrupted PNG/JPEG is found here, before training, instead of crashing ``tf.data`` mid-epoch without a name.

    A file verified before with the same size and modification time is not decoded again: one manifest per directory
    under ``$NAS_ZOO_CACHE`` (default ``~/.cache/nas_zoo``), written atomically; an unwritable cache only costs the
    re-decoding. TensorFlow-free.
    """
    import json

    from common.io import write_json
    by_dir: dict[str, list[str]] = {}
    for f in files:
        by_dir.setdefault(os.path.dirname(os.path.abspath(f)), []).append(f)
    bad = []
    for directory, group in by_dir.items():
        manifest = _manifest_path(directory)
        try:
            with open(manifest) as fh:
                known = json.load(fh).get("ok", {})
        except (OSError, ValueError, AttributeError):
            known = {}
        if not isinstance(known, dict):  # a manifest damaged by hand: start it over
            known = {}
        changed = False
        for f in group:
            problem = file_problem(f)  # a broken or looping link, a FIFO (opening it would block), …
            if problem:
                bad.append((f, problem))
                continue
            try:
                st = os.stat(f)
            except OSError as e:
                bad.append((f, f"cannot read ({e.strerror})"))
                continue
            stamp = [st.st_size, st.st_mtime_ns]
            name = os.path.basename(f)
            if known.get(name) == stamp:
                continue
            key = (os.path.abspath(f), *stamp)
            if key not in _MEMO:
                _MEMO[key] = _decode_problem(f)
            problem = _MEMO[key]
            if problem:
                bad.append((f, problem))
                known.pop(name, None)
            else:
                known[name] = stamp
            changed = True
        if changed:
            try:
                write_json(manifest, {"dir": directory, "ok": known})
            except OSError:
                pass
    return bad
