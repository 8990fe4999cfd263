"""digits: scikit-learn's embedded 8x8 handwritten digits (1,797 images, 10 classes), no files needed."""
import numpy as np

from convforge.data.records import ImageArrays
from convforge.errors import DataError, close_matches

SPLITS = ("train", "val", "all")


def digits(split="train", val_fraction=0.2, seed=0):
    """Return the UCI handwritten digits as ImageArrays: uint8 (N, 8, 8, 1) in 0..255 and labels 0..9.

    The split is stratified (each digit keeps its share in both halves), disjoint and fixed by `seed`;
    "all" returns every image in the original order. The pipeline upsamples to the model's input size
    (LeNet-5 takes 32x32x1).

    Examples:
        >>> train = digits("train")
        >>> train.images.shape[1:], train.images.dtype.name, len(train.class_names)
        ((8, 8, 1), 'uint8', 10)
    """
    if split not in SPLITS:
        raise DataError(f"digits split {split!r} is not one of {', '.join(SPLITS)}{close_matches(split, SPLITS)}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"digits val_fraction={val_fraction} must lie strictly between 0 and 1")
    from sklearn.datasets import load_digits

    data = load_digits()
    # The source pixels are 4-bit counts (0..16); scale to the 0..255 range every other source uses.
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = data.target.astype(np.int64)
    index = np.arange(len(labels))
    if split != "all":
        rng = np.random.default_rng(seed)
        val = np.zeros(len(labels), bool)
        for label in np.unique(labels):
            members = rng.permutation(index[labels == label])
            val[members[:int(round(len(members) * val_fraction))]] = True
        index = index[val] if split == "val" else index[~val]
    return ImageArrays(images[index], labels[index], [str(d) for d in range(10)], f"digits({split!r})", index)
