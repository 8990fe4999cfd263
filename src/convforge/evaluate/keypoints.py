"""Keypoint accuracy: NME and failure rate (face alignment), PCK (pose), each from numpy arrays.

Points are (N, K, 2) in pixels, visibility (N, K) COCO v; only labelled points (v > 0) count. Each measure
divides an image's errors by a length of that image's ground truth, so it reads the same at any resolution:
- NME: the mean over labelled points of |pred - true| / d, with d the inter-ocular distance (the outer eye
  corners, as 300-W reports it; the eye centres of COCO-style names) where the names give the eyes, else the
  geometric mean of the width and height of the labelled points' box (`nme_normalization` says which).
  failure_rate: the share of images whose NME exceeds 0.1.
- PCK@a: the share of labelled points within a x the torso diameter (the distance between the left shoulder
  and the right hip, as LSP's PCK) where the names give a torso, else a x the larger side of the points' box.
"""
import numpy as np

FAILURE_NME = 0.1
# Name pairs that measure an image's scale, tried in order.
EYE_PAIRS = (("right_eye_outer", "left_eye_outer"), ("right_eye", "left_eye"))
TORSO_PAIRS = (("left_shoulder", "right_hip"), ("right_shoulder", "left_hip"))


def _pair(names, pairs):
    """The indices of the first pair of names present, or None."""
    names = list(names or ())
    for a, b in pairs:
        if a in names and b in names:
            return names.index(a), names.index(b)
    return None


def box_size(points, visibility, how="geometric"):
    """Per image (N,): the geometric mean (or the larger) of the width and height of the labelled points' box."""
    labelled = visibility > 0
    big, small = np.where(labelled[..., None], points, -np.inf), np.where(labelled[..., None], points, np.inf)
    extent = np.maximum(big.max(1) - small.min(1), 0.0)  # (N, 2)
    extent = np.where(np.isfinite(extent), extent, 0.0)
    return np.sqrt(extent[:, 0] * extent[:, 1]) if how == "geometric" else extent.max(1)


def _pair_distance(points, visibility, pair, fallback):
    """Per image: the distance between the pair's two points where both are labelled, else the fallback."""
    if pair is None:
        return fallback
    a, b = pair
    distance = np.linalg.norm(points[:, a] - points[:, b], axis=-1)
    both = (visibility[:, a] > 0) & (visibility[:, b] > 0) & (distance > 0)
    return np.where(both, distance, fallback)


def nme(pred, true, visibility, names=None):
    """{"nme", "failure_rate", "nme_normalization", "per_image"}: normalized mean error over labelled points."""
    pair = _pair(names, EYE_PAIRS)
    scale = _pair_distance(true, visibility, pair, box_size(true, visibility))
    labelled = (visibility > 0).astype("float64")
    error = np.linalg.norm(pred - true, axis=-1) * labelled
    per_image = error.sum(1) / np.maximum(labelled.sum(1), 1) / np.maximum(scale, 1e-9)
    counted = labelled.sum(1) > 0
    per_image = per_image[counted]
    return {"nme": float(per_image.mean()) if len(per_image) else 0.0,
            "failure_rate": float((per_image > FAILURE_NME).mean()) if len(per_image) else 0.0,
            "nme_normalization": "inter_ocular" if pair else "box", "per_image": per_image}


def pck(pred, true, visibility, names=None, alpha=0.2):
    """{"pck", "pck_normalization"}: the share of labelled points within alpha x the torso (or box) size."""
    pair = _pair(names, TORSO_PAIRS)
    scale = _pair_distance(true, visibility, pair, box_size(true, visibility, "max"))
    labelled = visibility > 0
    correct = np.linalg.norm(pred - true, axis=-1) <= alpha * scale[:, None]
    return {"pck": float(correct[labelled].mean()) if labelled.any() else 0.0,
            "pck_normalization": "torso" if pair else "box"}
