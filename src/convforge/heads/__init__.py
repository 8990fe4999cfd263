"""Heads: what a task puts on a backbone's feature levels, as Keras layers and functions of tensors.

Importing this package registers every head's custom Keras objects (layers, losses, metrics), so a saved model
that uses them loads in a fresh process.
"""
from convforge.heads import classification, localization, single_shot, two_stage, yolo  # noqa: F401
from convforge.heads import keypoints, mask_rcnn, overfeat, rcnn, segmentation, voxels  # noqa: F401
from convforge.heads import discriminators, generators  # noqa: F401
