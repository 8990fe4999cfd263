"""Multi-instance records: every object's box, class, crowd flag, mask (rasterized from COCO polygons or RLE at
the training size) and keypoints, padded to max_instances, from Records and from TFRecord alike."""
import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from convforge import data
from convforge.data.instances import ParseContext, flip_pairs, pad_instances, rasterize
from convforge.errors import DataError
from convforge.tasks import Parser, Task, register_task, unregister_task

SIZE = 40  # training size; the shapes images are 48 px, so masks and keypoints are really rescaled
KINDS = ("boxes", "masks", "keypoints")


class InstancesProbe(Task):
    """A task that trains on nothing but asks the pipeline for every per-object kind, padded."""

    name = "instances_probe_test"
    annotations = frozenset({"label", "boxes", "masks", "keypoints"})
    parser = Parser(keeps_record=lambda r: True, keeps_example=lambda e: True,
                    target=lambda e, context: pad_instances(e, context, KINDS))


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """Register the test's task for this module only, so other modules see the built-in registry."""
    register_task(InstancesProbe)
    yield
    unregister_task(InstancesProbe.name)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """12 shapes images of 48 px with 2 to 5 objects each."""
    out = tmp_path_factory.mktemp("multi") / "shapes"
    return data.coco(*data.ensure_shapes(out, n=16, size=48, seed=5, val_fraction=0.25, objects=(2, 5))["train"])


def _batch(source, max_instances=6, batch=12):
    ds = data.build_dataset(source, "instances_probe_test", (SIZE, SIZE, 3), batch, False,
                            max_instances=max_instances, normalize="unit")
    images, targets = next(iter(ds))
    return np.asarray(images), {k: np.asarray(v) for k, v in targets.items()}


def test_padded_batches_carry_every_object_with_its_mask_and_keypoints(records):
    _, t = _batch(records)
    objects = [r["objects"] for r in records.records[:12]]
    assert t["boxes"].shape == (12, 6, 4) and t["masks"].shape == (12, 6, SIZE, SIZE)
    assert t["keypoints"].shape == (12, 6, 5, 3)
    assert list(t["num_instances"]) == [len(o) for o in objects]
    assert sorted({len(o) for o in objects}) == [2, 3, 4, 5]
    for i, (record, objs) in enumerate(zip(records.records[:12], objects)):
        n = len(objs)
        assert t["valid"][i].tolist() == [True] * n + [False] * (6 - n)
        assert (t["classes"][i, n:] == -1).all() and not t["masks"][i, n:].any()
        for j, obj in enumerate(objs):
            assert t["classes"][i, j] == obj["category_id"]
            # The mask is the polygon rasterized at 40 px by pycocotools, computed here independently.
            poly = [(np.asarray(p).reshape(-1, 2) * SIZE / record["width"]).reshape(-1).tolist()
                    for p in obj["segmentation"]]
            want = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(poly, SIZE, SIZE)))
            np.testing.assert_array_equal(t["masks"][i, j], want)
            # ... and it fills its box (to the 1.5 px that pycocotools' rasterizer may round by at this scale).
            ys, xs = np.nonzero(t["masks"][i, j])
            ymin, xmin, ymax, xmax = t["boxes"][i, j] * SIZE
            np.testing.assert_allclose([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], [ymin, xmin, ymax, xmax],
                                       atol=1.5)
            kp = np.asarray(obj["keypoints"], np.float32).reshape(-1, 3)
            np.testing.assert_allclose(t["keypoints"][i, j, :, 0], kp[:, 0] / record["width"], atol=1e-6)
            np.testing.assert_allclose(t["keypoints"][i, j, :, 1], kp[:, 1] / record["height"], atol=1e-6)
            np.testing.assert_array_equal(t["keypoints"][i, j, :, 2], kp[:, 2])


def test_max_instances_cuts_to_the_first_objects(records):
    _, t = _batch(records, max_instances=2)
    assert t["boxes"].shape == (12, 2, 4) and (t["num_instances"] == 2).all() and t["valid"].all()


def test_tfrecord_round_trip_keeps_masks_and_keypoints(records, tmp_path):
    data.write_tfrecord(records, tmp_path / "tfr" / "train", num_shards=1)
    assert (tmp_path / "tfr" / "keypoints.txt").read_text().split() == list(data.KEYPOINT_NAMES)
    examples = data.tfrecord(tmp_path / "tfr" / "train")
    assert examples.keypoint_names == list(data.KEYPOINT_NAMES)
    _, from_files = _batch(records)
    _, from_tfrecord = _batch(examples)
    for key, value in from_files.items():
        np.testing.assert_array_equal(from_tfrecord[key], value, err_msg=key)


def test_rle_and_polygon_rasterize_to_the_same_mask():
    polygon = [[4.0, 4.0, 40.0, 6.0, 30.0, 44.0, 8.0, 30.0]]
    full = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygon, 48, 48)))
    compressed = coco_mask.encode(np.asfortranarray(full))
    compressed["counts"] = compressed["counts"].decode()
    flat = full.reshape(-1, order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
    uncompressed = {"size": [48, 48], "counts": np.diff(np.concatenate([[0], changes])).tolist()}
    # At the image's own size all three are the same pixels; at 24 px RLE is resized by nearest neighbour.
    for segmentation in (compressed, uncompressed, json.dumps(compressed)):
        np.testing.assert_array_equal(rasterize(segmentation, 48, 48, 48, 48), full)
        np.testing.assert_array_equal(rasterize(segmentation, 48, 48, 24, 24), full[::2, ::2])
    assert not rasterize("", 48, 48, 24, 24).any()
    with pytest.raises(DataError, match="neither COCO polygons nor RLE"):
        rasterize({"points": [1, 2]}, 48, 48, 24, 24)


def test_flip_pairs_come_from_left_and_right_names():
    coco_person = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder"]
    assert flip_pairs(coco_person) == [(1, 2), (3, 4), (5, 6)]
    assert flip_pairs(data.KEYPOINT_NAMES) == [(4, 2)]  # shapes: left <-> right; centre, top, bottom stay
    assert flip_pairs(None) == []


def test_an_augmentation_that_cannot_move_instances_is_refused(records):
    with pytest.raises(DataError, match="cannot carry the boxes, keypoints, masks that instances_probe_test needs"):
        data.build_dataset(records, "instances_probe_test", (SIZE, SIZE, 3), 4, True, augment=["rand_augment"])
    assert ParseContext(SIZE, SIZE).max_instances == 100


@pytest.mark.parametrize("augment", ["flip", {"name": "translate", "factor": 0.2}, {"name": "crop", "zoom": 0.3},
                                     {"name": "rotate", "degrees": 30}])
def test_geometric_augmentations_keep_boxes_masks_and_keypoints_on_the_pixels(records, augment):
    """Each object is painted into the image with its own grey level before augmenting. Afterwards the masks,
    painted the same way, must match the augmented image best where they are (not shifted by a pixel or more),
    every box must hold its mask, and every visible centre keypoint must sit on its mask."""
    import tensorflow as tf

    from convforge.data.augment import build_augmenter

    _, t = _batch(records)
    levels = (np.arange(6)[None, :, None, None] + 1) * 40.0
    painted = np.max(t["masks"] * levels, axis=1)  # (B, H, W): object j at grey 40 (j + 1), overlaps: the higher
    images = np.repeat(painted[..., None], 3, axis=-1).astype("float32")
    task = InstancesProbe()
    changed = 0
    shifts = [(dy, dx) for dy in (-2, -1, 0, 1, 2) for dx in (-2, -1, 0, 1, 2)]
    for seed in range(3):
        augmenter = build_augmenter([augment], task, (SIZE, SIZE, 3), seed=seed, keypoint_names=data.KEYPOINT_NAMES)
        out_images, out = augmenter(tf.constant(images), {k: tf.constant(v) for k, v in t.items()})
        out_images, out = np.asarray(out_images)[..., 0], {k: np.asarray(v) for k, v in out.items()}
        changed += int(not np.array_equal(out["masks"], t["masks"]))
        repainted = np.max(out["masks"] * levels, axis=1)
        for i in range(len(images)):
            errors = {shift: np.abs(np.roll(repainted[i], shift, (0, 1)) - out_images[i]).mean() for shift in shifts}
            assert min(errors, key=errors.get) == (0, 0), (i, augment, errors)
            for j in range(int(t["num_instances"][i])):
                mask = out["masks"][i, j].astype(bool)
                if mask.sum() < 6 or not out["valid"][i, j]:
                    continue  # pushed (almost) out of the image
                # The box holds the mask to the rasterizer's rounding, magnified up to 1.4x by a crop.
                ys, xs = np.nonzero(mask)
                ymin, xmin, ymax, xmax = out["boxes"][i, j] * SIZE
                assert ys.min() >= ymin - 3 and ys.max() + 1 <= ymax + 3, (i, j, augment)
                assert xs.min() >= xmin - 3 and xs.max() + 1 <= xmax + 3, (i, j, augment)
                x, y, v = out["keypoints"][i, j, 0]  # the centre keypoint
                if v > 0:
                    row, col = int(y * SIZE), int(x * SIZE)
                    assert mask[max(0, row - 2):row + 3, max(0, col - 2):col + 3].any(), (i, j, augment)
                left, right = out["keypoints"][i, j, 4], out["keypoints"][i, j, 2]
                if augment == "flip" and left[2] > 0 and right[2] > 0:
                    assert left[0] <= right[0] + 1e-6, (i, j)  # "left" stays the left-most point after a flip
    assert changed, "the augmentation never moved anything"
