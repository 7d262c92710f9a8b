"""Image datasets: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (MIT; copied into the user cache
by ``lrptext data fetch fashion-mnist``, hash-recorded) and scikit-learn's 8x8 digits. Without a
fetched copy the Debian package's files are read where they are installed. Pixels are floats in [0, 1];
models see them normalised with the dataset's mean and standard deviation."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrptext.datasets.registry import DatasetMissingError, cache_dir, sha256

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]


@dataclass(frozen=True)
class ImageDataset:
    name: str
    label_names: list[str]
    train_images: np.ndarray  # [N, C, H, W] float32 in [0, 1]
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian dimensions, then unsigned bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fetch_fashion_mnist(source: Path = DEBIAN_FOLDER) -> Path:
    folder = cache_dir() / "fashion-mnist"
    if not all((source / f).exists() for f in FASHION_FILES):
        raise DatasetMissingError(f"Fashion-MNIST is not in {source}; install the Debian package "
                                  "(apt-get install dataset-fashion-mnist), then run "
                                  "'lrptext data fetch fashion-mnist'")
    folder.mkdir(parents=True, exist_ok=True)
    for f in FASHION_FILES:
        shutil.copyfile(source / f, folder / f)
    (folder / "manifest.json").write_text(json.dumps({
        "source": "Debian package dataset-fashion-mnist (MIT)",
        "files": {f: sha256(folder / f) for f in FASHION_FILES}}, indent=2) + "\n")
    return folder


def _fashion_folder() -> Path:
    """The fetched copy in the cache (its hashes checked), else the installed Debian package's files read in place."""
    folder = cache_dir() / "fashion-mnist"
    manifest = folder / "manifest.json"
    if manifest.exists():
        for f, digest in json.loads(manifest.read_text())["files"].items():
            if sha256(folder / f) != digest:
                raise ValueError(f"{folder / f} does not match its recorded sha256; run 'lrptext data fetch "
                                 "fashion-mnist'")
        return folder
    if all((DEBIAN_FOLDER / f).exists() for f in FASHION_FILES):
        return DEBIAN_FOLDER
    raise DatasetMissingError(f"Fashion-MNIST is neither in the cache {folder} nor installed in {DEBIAN_FOLDER}; "
                              "install the Debian package (apt-get install dataset-fashion-mnist), or copy its files "
                              "into the cache with 'lrptext data fetch fashion-mnist'")


def load_fashion_mnist() -> ImageDataset:
    folder = _fashion_folder()

    def images(name: str) -> np.ndarray:
        return (_idx(folder / name).astype(np.float32) / 255.0)[:, None]

    def labels(name: str) -> np.ndarray:
        return _idx(folder / name).astype(np.int64)

    return ImageDataset("fashion-mnist", FASHION_LABELS, images(FASHION_FILES[0]), labels(FASHION_FILES[1]),
                        images(FASHION_FILES[2]), labels(FASHION_FILES[3]))


def load_digits() -> ImageDataset:
    """scikit-learn's 8x8 digits (shipped with scikit-learn), 80/20 split with seed 0."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    images = (data.images.astype(np.float32) / 16.0)[:, None]
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(0.8 * len(images))
    train, test = order[:cut], order[cut:]
    return ImageDataset("digits", [str(i) for i in range(10)], images[train], data.target[train].astype(np.int64),
                        images[test], data.target[test].astype(np.int64))


def load_images(name: str) -> ImageDataset:
    if name == "fashion-mnist":
        return load_fashion_mnist()
    if name == "digits":
        return load_digits()
    raise ValueError(f"unknown image dataset {name!r}; available: fashion-mnist, digits")
