"""Voxel IoU: the intersection over union of predicted and true occupancy grids, per example, at a threshold.

IoU of an example whose grids are both empty is 1 (nothing to find, nothing found). `threshold_sweep` gives the
mean IoU at thresholds 0.1 ... 0.9, since the cross-entropy's weighting of occupied voxels shifts the best one.
"""
import numpy as np

SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def voxel_iou(probabilities, truth, threshold=0.5):
    """Per example (N,): |pred & true| / |pred | true| of grids (N, S, S, S), pred = probabilities > threshold."""
    guess = np.asarray(probabilities) > threshold
    truth = np.asarray(truth) > 0.5
    axes = tuple(range(1, guess.ndim))
    both, either = (guess & truth).sum(axes), (guess | truth).sum(axes)
    return np.where(either > 0, both / np.maximum(either, 1), 1.0)


def threshold_sweep(probabilities, truth, thresholds=SWEEP):
    """{threshold: mean IoU} over the examples at each threshold."""
    return {float(t): float(voxel_iou(probabilities, truth, t).mean()) for t in thresholds}
