"""COCO mAP comes from pycocotools' COCOeval; these cases check that convforge hands it the right JSON (pixel
[x, y, w, h] of the original image, the dataset's own category ids, crowd flags) by the numbers COCO's rules give:
perfect, shifted (IoU 2/3), duplicated, missed and crowd-covered detections."""
import numpy as np
import pytest

from convforge.data.records import Records
from convforge.evaluate.coco import coco_metrics, detections_to_coco, ground_truth

pytest.importorskip("pycocotools")

SIZE = 200  # image side; 40 x 40 objects are COCO "medium" (32^2 < area < 96^2)


@pytest.fixture(scope="module")
def records():
    """Four images with two 40x40 objects each, classes 0/1 stored as COCO ids 3/7, and one crowd region."""
    rows = []
    for i in range(4):
        objects = [{"category_id": 0, "bbox": [20 + 10 * i, 30, 40, 40], "area": 1600.0, "iscrowd": 0},
                   {"category_id": 1, "bbox": [120, 100 + 5 * i, 40, 40], "area": 1600.0, "iscrowd": 0}]
        if i == 0:
            objects.append({"category_id": 0, "bbox": [100, 10, 60, 60], "area": 3600.0, "iscrowd": 1})
        rows.append({"image_path": f"img{i}.png", "width": SIZE, "height": SIZE, "image_id": 100 + i,
                     "label": None, "objects": objects})
    return Records(rows, ["circle", "star"], category_ids=[3, 7])


def _detections(records, shift=0.0, keep=None, duplicate=False, on_crowd=False, images=None):
    """COCO results from normalized [ymin, xmin, ymax, xmax] boxes per image, as a detector would give them."""
    results = []
    for index, r in enumerate(records):
        if images is not None and index not in images:
            continue
        boxes, scores, classes = [], [], []
        for k, o in enumerate(o for o in r["objects"] if not o["iscrowd"]):
            if keep is not None and k not in keep:
                continue
            x, y, w, h = o["bbox"]
            boxes.append([y / SIZE, (x + shift) / SIZE, (y + h) / SIZE, (x + w + shift) / SIZE])
            scores.append(0.9 - 0.1 * k)
            classes.append(o["category_id"])
        if duplicate:
            boxes, scores, classes = boxes * 2, scores + [0.05] * len(scores), classes * 2
        if on_crowd and index == 0:
            boxes.append([10 / SIZE, 100 / SIZE, 70 / SIZE, 160 / SIZE])
            scores.append(0.99)
            classes.append(0)
        results += detections_to_coco(r["image_id"], r["width"], r["height"], np.array(boxes), np.array(scores),
                                      np.array(classes), records.category_ids)
    return results


def test_ground_truth_keeps_the_datasets_ids_and_crowd_flags(records):
    gt = ground_truth(records)
    assert [c["id"] for c in gt["categories"]] == [3, 7]
    assert {a["category_id"] for a in gt["annotations"]} == {3, 7}
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 1 and gt["images"][0]["id"] == 100
    det = _detections(records)[0]
    assert det["image_id"] == 100 and det["category_id"] == 3 and det["bbox"] == [20.0, 30.0, 40.0, 40.0]


@pytest.mark.parametrize("case, expected", [
    (dict(), {"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "AR100": 1.0, "APm": 1.0}),
    # 8 px of 40: IoU 32*40 / (2*1600 - 32*40) = 2/3 passes the thresholds 0.50, 0.55, 0.60, 0.65 of ten.
    (dict(shift=8.0), {"AP": 0.4, "AP50": 1.0, "AP75": 0.0, "AR100": 0.4}),
    # Every object found twice: the second copy, scored below every first, costs no precision before recall 1.
    (dict(duplicate=True), {"AP": 1.0, "AP50": 1.0, "AR100": 1.0}),
    # Every star missed: circles score AP 1, stars 0, and COCO averages over categories.
    (dict(keep={0}), {"AP": 0.5, "AP50": 0.5, "AR100": 0.5}),
    # Half of each class found: precision 1 up to recall 0.5, i.e. 51 of COCO's 101 recall points.
    (dict(images={0, 1}), {"AP": 51 / 101, "AP50": 51 / 101, "AR100": 0.5}),
    # A confident detection on a crowd region is neither a hit nor a false positive.
    (dict(on_crowd=True), {"AP": 1.0, "AP50": 1.0, "AR100": 1.0}),
])
def test_coco_metrics_follow_cocos_rules(records, case, expected):
    metrics = coco_metrics(ground_truth(records), _detections(records, **case))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), (case, key, metrics)
    assert metrics["APs"] == -1.0  # no small objects: COCO's "nothing to average"


def test_no_detections_score_zero_and_a_bad_file_is_one_error(records, tmp_path):
    from convforge.errors import DataError

    assert coco_metrics(ground_truth(records), [])["AP"] == 0.0
    (tmp_path / "gt.json").write_text("{not json")
    with pytest.raises(DataError, match="gt.json cannot be read"):
        coco_metrics(tmp_path / "gt.json", _detections(records))
