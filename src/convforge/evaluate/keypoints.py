"""Keypoint accuracy: NME and failure rate (face alignment), PCK and OKS (pose), each from numpy arrays.

Points are (N, K, 2) in pixels, visibility (N, K) COCO v; only labelled points (v > 0) count. Each measure
divides an image's errors by a length of that image's ground truth, so it reads the same at any resolution:
- NME: the mean over labelled points of |pred - true| / d, with d the inter-ocular distance (the outer eye
  corners, as 300-W reports it; the eye centres of COCO-style names) where the names give the eyes, else the
  geometric mean of the width and height of the labelled points' box (`nme_normalization` says which).
  failure_rate: the share of images whose NME exceeds 0.1.
- PCK@a: the share of labelled points within a x the torso diameter (the distance between the left shoulder
  and the right hip, as LSP's PCK) where the names give a torso, else a x the larger side of the points' box.
- OKS: COCO's object keypoint similarity, the mean over labelled points of exp(-d^2 / (2 s^2 k^2)) with s^2
  the object's area and k = 2 sigma per keypoint; its AP over images is pycocotools' (evaluate.coco), with
  COCO's sigmas for the 17 person keypoints (`oks_sigmas`).
"""
import numpy as np

FAILURE_NME = 0.1
# COCO's per-keypoint OKS sigmas of its 17 person keypoints, in its keypoint order (pycocotools' values).
COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087,
               0.087, 0.089, 0.089)
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


def oks_sigmas(names):
    """The OKS sigmas of a dataset's keypoints: COCO's where they are COCO's 17 person keypoints, else None (OKS
    has no agreed sigmas for other points)."""
    return COCO_SIGMAS if tuple(names or ()) == COCO_KEYPOINTS else None


def oks(pred, true, visibility, area, sigmas=COCO_SIGMAS):
    """Per pair (N,): COCO's object keypoint similarity of predicted and true points (N, K, 2) in pixels, over
    the labelled ones (v > 0), for objects of `area` pixels (N,); 0 where none is labelled."""
    k2 = (2 * np.asarray(sigmas, np.float64)) ** 2
    d2 = ((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2).sum(-1)
    e = d2 / k2 / (2 * (np.asarray(area, np.float64)[:, None] + np.spacing(1)))
    labelled = visibility > 0
    total = np.where(labelled, np.exp(-e), 0.0).sum(1)
    return np.where(labelled.any(1), total / np.maximum(labelled.sum(1), 1), 0.0)
