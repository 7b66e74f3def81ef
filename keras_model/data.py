"""Datasets for training and validating the models: Fashion-MNIST or a user's image folder.

Fashion-MNIST (Xiao et al. 2017, https://arxiv.org/abs/1708.07747) comes from Debian's
``dataset-fashion-mnist`` package (idx files, 60k train / 10k test, 28x28 gray, 10 classes). Images are
resized to the model's input resolution with bilinear interpolation (half-pixel centres, as
``tf.image.resize``) in numpy, so the compiler and the harness can load data without importing TensorFlow.

A user's own data (``--data DIR``) is one sub-folder per class; it is split into train/test deterministically
by seed (``TEST_FRACTION`` of each class goes to the test split).

Everything returns ``(x, y)``: x float32 NHWC in [0, 1], y int64 class indices.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Idx file names of the two splits: (images, labels).
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle boot")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
TEST_FRACTION = 0.2  # share of each class of a user's folder held out as the test split


class DataError(ValueError):
    """Unusable data: the message is one line meant for the user."""


def _read_idx(path: Path) -> np.ndarray:
    """Read one gzip'ed idx file (http://yann.lecun.com/exdb/mnist/ format: magic, dims, uint8 data)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte data
        raise DataError(f"{path} is not a uint8 idx file")
    ndim = magic & 0xFF
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) interpolation matrix of 1-D bilinear resizing with half-pixel centres."""
    m = np.zeros((n_out, n_in), np.float32)
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo).astype(np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def resize(x: np.ndarray, resolution: int) -> np.ndarray:
    """Bilinear resize of NHWC float images to resolution x resolution."""
    n, h, w, c = x.shape
    if h == resolution and w == resolution:
        return x.astype(np.float32, copy=False)
    rows = _bilinear_matrix(h, resolution)
    cols = _bilinear_matrix(w, resolution)
    out = np.einsum("ih,nhwc,jw->nijc", rows, x.astype(np.float32), cols, optimize=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _set_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[-1] == channels:
        return x
    if channels == 3 and x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    if channels == 1 and x.shape[-1] == 3:  # ITU-R BT.601 luma
        return (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    raise DataError(f"cannot convert {x.shape[-1]}-channel images to {channels} channels")


def _fashion_mnist(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    img_name, lbl_name = FASHION_MNIST_FILES[split]
    img_path, lbl_path = FASHION_MNIST_DIR / img_name, FASHION_MNIST_DIR / lbl_name
    if not (img_path.is_file() and lbl_path.is_file()):
        raise DataError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}: run `make setup` "
                        "(installs the Debian package dataset-fashion-mnist)")
    x = _read_idx(img_path)
    y = _read_idx(lbl_path).astype(np.int64)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return (x.astype(np.float32) / 255.0)[..., None], y


def list_image_folder(data_dir: str | os.PathLike) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (image path, class index) pairs of an image folder."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist or is not a directory")
    try:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"cannot read data directory {root}: {e.strerror}") from None
    if len(classes) < 2:
        raise DataError(f"data directory {root} needs one sub-folder per class (found {len(classes)})")
    items = []
    for idx, name in enumerate(classes):
        try:
            files = sorted(p for p in (root / name).iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as e:
            raise DataError(f"cannot read class folder {root / name}: {e.strerror}") from None
        if not files:
            raise DataError(f"class folder {root / name} has no images ({', '.join(IMAGE_SUFFIXES)})")
        items += [(f, idx) for f in files]
    return classes, items


def _image_folder(data_dir, split: str, resolution: int, seed: int, limit: int | None):
    from PIL import Image, UnidentifiedImageError

    _, items = list_image_folder(data_dir)
    labels = np.array([c for _, c in items])
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):  # stratified split: the same seed always gives the same split
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, int(round(len(idx) * TEST_FRACTION))) if len(idx) > 1 else 0
        chosen += list(idx[:n_test] if split == "test" else idx[n_test:])
    chosen = sorted(chosen)[:limit] if limit is not None else sorted(chosen)
    xs = []
    for i in chosen:
        path = items[i][0]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                xs.append(np.asarray(im, np.float32) / 255.0)
        except (OSError, UnidentifiedImageError):
            raise DataError(f"cannot decode image {path}") from None
    if not xs:
        raise DataError(f"data directory {data_dir} has no images in the {split} split")
    return np.stack(xs), labels[chosen].astype(np.int64)


def load_dataset(split: str, resolution: int, channels: int, data_dir=None, limit: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of one split ("train" or "test") as (x float32 NHWC in [0, 1], y int64).

    data_dir None means Fashion-MNIST; otherwise an image folder with one sub-folder per class, split by
    seed. limit keeps the first N images of the split (Fashion-MNIST's order is already shuffled).
    """
    if split not in FASHION_MNIST_FILES:
        raise DataError(f"unknown split {split!r} (train or test)")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, not {channels}")
    if data_dir is None:
        x, y = _fashion_mnist(split, limit)
        x = resize(x, resolution)
    else:
        x, y = _image_folder(data_dir, split, resolution, seed, limit)
    return _set_channels(x, channels), y


def num_classes(data_dir=None) -> int:
    """Number of classes of the dataset (10 for Fashion-MNIST)."""
    return len(FASHION_MNIST_CLASSES) if data_dir is None else len(list_image_folder(data_dir)[0])


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float images -> int8 exactly as TFLite's QUANTIZE reference kernel (AffineQuantize).

    TFLite computes round(x / scale) + zero_point in float32 with std::round (half away from zero), then
    clamps to [-128, 127]; np.round would round half to even, so it is not used.
    """
    q = np.asarray(x, np.float32) / np.float32(scale)
    q = np.sign(q) * np.floor(np.abs(q) + np.float32(0.5))
    return np.clip(q.astype(np.int32) + int(zero_point), -128, 127).astype(np.int8)
