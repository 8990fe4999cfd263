"""Evaluation that the field quotes by its reference implementations (COCO mAP through pycocotools)."""
