"""Pose: the figures set (17 COCO joints, several people, occlusion flags), person crops that keep their
keypoints on the pixels they name, OKS and its AP against pycocotools, and a top-down keypoint model trained on
crops, scored on ground-truth boxes and through a detector, and drawn."""
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import convforge  # noqa: E402
from convforge import data  # noqa: E402
from convforge.errors import DataError  # noqa: E402
from convforge.recipes import load_recipe  # noqa: E402
from runchecks import check_finished_run, history_rows  # noqa: E402
from smallmodels import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POSE = ROOT / "recipes" / "keypoints" / "pose_heatmap_resnet18_figures.yaml"
SMALL = {"depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64]}
COCO_SKELETON_NAMES = {("left_ankle", "left_knee"), ("left_shoulder", "right_shoulder"), ("nose", "left_eye")}


def test_the_figures_set_is_seeded_coco_person_keypoints(tmp_path):
    from convforge.data.figures import KEYPOINT_NAMES, SKELETON
    from convforge.data.instances import flip_pairs, skeleton_of
    from convforge.evaluate.keypoints import COCO_KEYPOINTS

    splits = data.ensure_figures(tmp_path / "f", n=30, size=64, seed=3)
    records = data.coco(*splits["train"])
    assert records.keypoint_names == list(KEYPOINT_NAMES) == list(COCO_KEYPOINTS) and len(records) == 24
    pairs = {tuple(sorted((KEYPOINT_NAMES[a - 1], KEYPOINT_NAMES[b - 1]))) for a, b in SKELETON}
    assert {tuple(sorted(p)) for p in COCO_SKELETON_NAMES} <= pairs and skeleton_of(KEYPOINT_NAMES) == SKELETON
    assert len(flip_pairs(KEYPOINT_NAMES)) == 8  # eyes, ears, shoulders, elbows, wrists, hips, knees, ankles
    people = [o for r in records for o in r["objects"]]
    assert max(len(r["objects"]) for r in records) > 1 and len(people) > len(records)
    visibility = np.array([o["keypoints"][2::3] for o in people])
    assert (visibility == 1).any() and (visibility == 2).mean() > 0.6  # some hidden joints, most visible
    for r in records:
        for o in r["objects"]:
            x, y, w, h = o["bbox"]
            k = np.asarray(o["keypoints"], float).reshape(-1, 3)
            labelled = k[:, 2] > 0
            assert np.all((k[labelled, 0] >= x - 1) & (k[labelled, 0] <= x + w + 1)), o  # the box holds its joints
            assert np.all((k[labelled, 1] >= y - 1) & (k[labelled, 1] <= y + h + 1)), o
            assert np.all(k[~labelled, :2] == 0) and 0 < o["area"] <= w * h
    # Facing the camera, the subject's left shoulder is on the image's right.
    shoulders = np.array([[o["keypoints"][15], o["keypoints"][18]] for o in people])
    assert (shoulders[:, 0] > shoulders[:, 1]).mean() > 0.95
    again = data.generate_figures(tmp_path / "g", n=30, size=64, seed=3)
    assert Path(again["train"][0]).read_bytes() == Path(splits["train"][0]).read_bytes()
    with pytest.raises(DataError, match="figures n=0"):
        data.generate_figures(tmp_path / "h", n=0)


def test_a_crop_of_the_whole_image_is_resize_and_crops_keep_keypoints_on_their_pixels(tmp_path):
    """preprocessing.crop samples like preprocessing.resize; a top-down example's target points at the pixel its
    keypoint marks, whatever the person's place in the image."""
    import tensorflow as tf
    from PIL import Image

    from convforge import preprocessing as pixels
    from convforge.data.records import Records
    from convforge.tasks import get_task

    image = np.random.default_rng(0).uniform(0, 255, (2, 50, 37, 3)).astype("float32")
    for size in ((24, 18), (100, 74), (50, 37)):
        spec = {"resize": size, "round": False}
        whole = pixels.crop(image, np.array([[0, 0, 1, 1]] * 2, "float32"), spec)
        np.testing.assert_allclose(whole, pixels.resize(image, spec), atol=0.01)
    outside = np.asarray(pixels.crop(image, np.array([[-1, -1, -0.5, -0.5]] * 2, "float32"), {"resize": (8, 8)}))
    assert outside.max() == 0  # beyond the image: black

    # One white dot per person on black; each crop's target must sit on its own dot.
    canvas = np.zeros((80, 120, 3), np.uint8)
    objects = []
    for k, (x, y) in enumerate(((20.5, 30.5), (90.5, 60.5))):
        canvas[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
        points = np.zeros((17, 3))
        points[0] = [x, y, 2]
        objects.append({"bbox": [x - 12, y - 20, 24, 40], "category_id": 0, "keypoints": points.reshape(-1).tolist()})
    Image.fromarray(canvas).save(tmp_path / "dots.png")
    from convforge.data.figures import KEYPOINT_NAMES

    records = Records([{"image_path": str(tmp_path / "dots.png"), "width": 120, "height": 80, "objects": objects}],
                      class_names=["person"], keypoint_names=list(KEYPOINT_NAMES))
    task = get_task("keypoints", {"top_down": True, "metric": "pck"})
    batch = next(iter(data.build_dataset(records, task, (64, 48, 3), 4, False, normalize="unit")))
    crops, targets = (np.asarray(v) for v in batch)
    assert crops.shape == (2, 64, 48, 3)
    for crop, target in zip(crops, targets):
        x, y = target[0, :2] * [48, 64]
        brightest = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
        assert abs(brightest[0] + 0.5 - y) <= 1.0 and abs(brightest[1] + 0.5 - x) <= 1.0, (brightest, x, y)
    assert tf.reduce_all(targets[:, 1:, 2] == 0)


def test_oks_and_its_ap_equal_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from convforge.evaluate.coco import coco_metrics
    from convforge.evaluate.keypoints import COCO_SIGMAS, oks

    rng = np.random.default_rng(1)
    true = rng.uniform(10, 90, (6, 17, 2))
    visibility = rng.choice([0, 1, 2], (6, 17), p=[0.2, 0.2, 0.6])
    pred = true + rng.normal(0, 4, true.shape)
    area = rng.uniform(500, 3000, 6)
    gt = {"images": [{"id": i, "width": 100, "height": 100} for i in range(6)],
          "categories": [{"id": 1, "name": "person"}], "annotations": []}
    for i in range(6):
        flat = np.concatenate([np.where(visibility[i, :, None] > 0, true[i], 0), visibility[i, :, None]], 1)
        gt["annotations"].append({"id": i + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "area": area[i],
                                  "bbox": [10, 10, 80, 80], "keypoints": flat.reshape(-1).tolist(),
                                  "num_keypoints": int((visibility[i] > 0).sum())})
    results = [{"image_id": i, "category_id": 1, "score": float(s),
                "keypoints": np.concatenate([pred[i], np.ones((17, 1))], 1).reshape(-1).tolist()}
               for i, s in zip(range(6), rng.uniform(0.2, 1, 6))]
    coco_gt = COCO()
    coco_gt.dataset = json.loads(json.dumps(gt))
    coco_gt.createIndex()
    evaluator = COCOeval(coco_gt, coco_gt.loadRes([dict(r) for r in results]), iouType="keypoints")
    evaluator.evaluate()
    reference = np.array([evaluator.computeOks(i, 1)[0, 0] for i in range(6)])
    np.testing.assert_allclose(oks(pred, true, visibility, area, COCO_SIGMAS), reference, rtol=1e-9)
    evaluator.accumulate()
    evaluator.summarize()
    assert coco_metrics(gt, results, "keypoints")["AP"] == pytest.approx(evaluator.stats[0])
    perfect = [{**r, "keypoints": np.concatenate([true[i], np.ones((17, 1))], 1).reshape(-1).tolist()}
               for i, r in enumerate(results)]
    assert coco_metrics(gt, perfect, "keypoints")["AP"] == pytest.approx(1.0)


def test_a_top_down_pose_model_trains_on_crops_and_scores_oks_ap_alike_on_its_own_and_through_a_detector(
        tmp_path, monkeypatch):
    """Trained on person crops, the loss falls and the run reports PCK and OKS AP on ground-truth boxes; the
    top-down pipeline given those boxes reproduces that AP; with a (here untrained) detector it runs end to end
    and predict draws every person it found."""
    from convforge.cli import main as cli_main
    from convforge.runs import evaluate
    from convforge.topdown import TopDown

    monkeypatch.chdir(tmp_path)
    sets = [*tiny(POSE, epochs=2, steps=4), "data.train.path=figures", "data.train.n=50", "data.train.size=64",
            "model.input_shape=[48,36,3]", f"model.options={json.dumps(SMALL)}", "head.channels=16",
            "train.optimizer.learning_rate=0.005"]
    recipe = load_recipe(POSE, overrides=sets)
    result = convforge.train(recipe, printer=lambda *_: None, verbose=0)
    run = Path(result["run_dir"])
    check_finished_run(run, recipe, epochs=2)  # test_train.py leaves this recipe to this test
    losses = [float(row["loss"]) for row in history_rows(run)]
    assert losses[-1] < losses[0], losses
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_pck_normalization"] == "torso" and 0 <= metrics["val_pck"] <= 1
    assert metrics["val_oks_boxes"] == "ground_truth" and 0 <= metrics["val_oks_ap"] <= 1
    assert (run / "keypoint_results.json").exists()

    recipe = load_recipe(run / "recipe.yaml")
    val = data.coco(*data.ensure_figures("figures", n=50, size=64)["val"])

    class GroundTruthBoxes(TopDown):
        """The pipeline with the val set's own boxes for a detector, in record order."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.queue = [r for r in val]

        def boxes(self, image):
            r = self.queue.pop(0)
            people = [o for o in r["objects"] if any(v > 0 for v in o["keypoints"][2::3])]
            boxes = [[y / r["height"], x / r["width"], (y + h) / r["height"], (x + w) / r["width"]]
                     for x, y, w, h in (o["bbox"] for o in people)]
            return np.asarray(boxes, np.float64).reshape(-1, 4), np.ones(len(boxes))

    assert recipe.head["top_down"]
    same = GroundTruthBoxes(run, None).evaluate(val)
    assert same["oks_ap"] == pytest.approx(metrics["val_oks_ap"], abs=0.02)

    # A detector (untrained, one class) saved as a run would be: the top-down CLI paths run on it.
    detector = convforge.build_model("resnet18", task="detection", num_classes=1, input_shape=(64, 64, 3),
                                     head="yolo", **SMALL)
    detector = convforge.tasks.get_task("detection", {"name": "yolo"}).inference_model(detector)
    detector_dir = tmp_path / "detector"
    detector_dir.mkdir()
    detector.save(detector_dir / "model.keras")
    (detector_dir / "class_names.json").write_text('["person"]')
    scored = evaluate(run, out=tmp_path / "eval", detector=detector_dir)
    assert scored["val_oks_boxes"] == "detector" and "val_oks_ap_ground_truth_boxes" in scored
    image = sorted((tmp_path / "figures" / "images" / "val").glob("*.png"))[0]
    assert cli_main(["predict", str(run / "model.keras"), str(image), "--detector", str(detector_dir),
                     "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / f"{image.stem}.png").exists()
    with pytest.raises(convforge.errors.ConvforgeError, match="trained on crops"):
        TopDown(detector_dir, detector_dir)
