"""Instance segmentation: Mask R-CNN's mask targets and pasting, its public model, a recipe trained, evaluated
with COCO segm AP, drawn and exported, and the mixed-precision path."""
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import convforge  # noqa: E402
from convforge.recipes import load_recipe  # noqa: E402
from convforge.tasks import get_task  # noqa: E402
from runchecks import check_finished_run, history_rows  # noqa: E402
from smallmodels import tiny  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "segmentation" / "mask_rcnn_resnet18_shapes.yaml"
SMALL = {"depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64]}
HEAD = {"name": "mask_rcnn", "levels": ["C4"], "train_proposals": 16, "proposals": 10, "roi_samples": 16,
        "max_detections": 10, "channels": 16, "fc_units": 32, "mask_channels": 16}


def test_mask_targets_crop_each_proposals_own_object():
    from convforge.heads.mask_rcnn import mask_targets

    masks = np.zeros((1, 2, 64, 64), "float32")
    masks[0, 0, 16:48, 16:48] = 1  # a square
    masks[0, 1, 8:24, 32:64] = 1  # a band on the right
    boxes = np.array([[[0.25, 0.25, 0.75, 0.75], [0.25, 0.0, 0.75, 0.5], [0.125, 0.5, 0.375, 1.0]]], "float32")
    owner = np.array([[0, 0, 1]], "int32")
    target = np.asarray(mask_targets(masks, boxes, owner, 8))
    assert target.shape == (1, 3, 8, 8)
    assert target[0, 0].all()  # the square's own box: all object
    expected = np.zeros((8, 8))
    expected[:, 4:] = 1  # the box over the square's left half: its right half is object
    np.testing.assert_array_equal(target[0, 1], expected)
    assert target[0, 2].all()  # the band's box, from the band's mask (not the square's)


def test_pasted_masks_cover_their_boxes_and_crop_back():
    from convforge.data.instances import paste_masks
    from convforge.heads.mask_rcnn import mask_targets

    boxes = np.array([[0.25, 0.125, 0.75, 0.625]], "float32")
    full = paste_masks(np.ones((1, 14, 14)), boxes, 64, 64)
    expected = np.zeros((64, 64), bool)
    expected[16:48, 8:40] = True
    np.testing.assert_array_equal(full[0], expected)
    # A disc in the box's frame, pasted into the image and cropped back by the targets' RoIAlign.
    yy, xx = np.mgrid[:14, :14]
    disc = (((yy - 6.5) ** 2 + (xx - 6.5) ** 2) <= 36).astype("float32")
    pasted = paste_masks(disc[None], boxes, 64, 64)
    back = np.asarray(mask_targets(pasted[None].astype("float32"), boxes[None], np.zeros((1, 1), "int32"), 14))
    assert (back[0, 0] != disc).mean() < 0.05
    assert paste_masks(np.zeros((0, 14, 14)), np.zeros((0, 4)), 8, 8).shape == (0, 8, 8)


def test_the_public_build_model_gives_detections_and_masks_after_nms():
    model = convforge.build_model("resnet18", task="instance_segmentation", head="mask_rcnn", num_classes=3,
                                  input_shape=(64, 64, 3), mask_pool_size=7,
                                  **{k: v for k, v in HEAD.items() if k != "name"}, **SMALL)
    assert set(model.output) == {"boxes", "scores", "classes", "num_detections", "masks"}
    out = model(np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype("float32"))
    assert out["masks"].shape == (2, 10, 14, 14) and out["boxes"].shape == (2, 10, 4)
    masks = np.asarray(out["masks"])
    assert ((0 <= masks) & (masks <= 1)).all()
    task = get_task("instance_segmentation", HEAD)
    assert task.recognizes(model) and not get_task("detection").recognizes(model)
    assert task.spec_of(model.training_model)["mask_size"] == 14


def test_a_recipe_trains_evaluates_with_segm_ap_draws_and_exports(tmp_path, monkeypatch):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from convforge.cli import main as cli_main
    from convforge.runs import evaluate

    monkeypatch.chdir(tmp_path)
    sets = tiny(RECIPE, shapes_dir=tmp_path / "shapes", epochs=3, steps=4) + [
        "data.train.objects=[1,3]", f"model.options={json.dumps(SMALL)}", "model.input_shape=[64,64,3]",
        # Every candidate kept (score_threshold 0), so that twelve steps of training still give results to score;
        # proposals count as positive from IoU 0.3, so that the mask head has enough of them to learn from.
        "data.train.size=64", "head=" + json.dumps({**{k: v for k, v in HEAD.items() if k != "name"},
                                                    "score_threshold": 0.0, "roi_positive_iou": 0.3,
                                                    "train_proposals": 32, "roi_samples": 32}),
        "train.optimizer.learning_rate=0.01"]
    recipe = load_recipe(RECIPE, overrides=sets)
    result = convforge.train(recipe, printer=lambda *_: None, verbose=0)
    run = Path(result["run_dir"])
    check_finished_run(run, recipe, epochs=3)  # test_train.py leaves this recipe to this test
    history = history_rows(run)
    assert float(history[-1]["loss"]) < float(history[0]["loss"])
    # mask_loss is the mean over positive proposals: the masks themselves are learned, not more proposals found.
    assert float(history[-1]["mask_loss"]) < float(history[0]["mask_loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val_AP", "val_AP50", "val_AP75", "val_box_AP50"} <= set(metrics)
    assert 0 <= metrics["val_AP50"] <= 1

    # `evaluate --out`: COCO segm keys, segmentations.json in COCO's results format (RLE), which pycocotools
    # scores to the same AP50 against the annotations file it names.
    evaluate(run, out=tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    segments = json.loads((tmp_path / "eval" / "segmentations.json").read_text())
    assert segments and {"image_id", "category_id", "segmentation", "score"} <= set(segments[0])
    assert set(segments[0]["segmentation"]) == {"size", "counts"}
    gt = COCO(written["annotations"])
    evaluator = COCOeval(gt, gt.loadRes(segments), iouType="segm")
    evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    assert evaluator.stats[1] == pytest.approx(written["AP50"])
    assert written["AP50"] == pytest.approx(metrics["val_AP50"])

    image = sorted((tmp_path / "shapes").rglob("*.png"))[0]
    assert cli_main(["predict", str(run / "model.keras"), str(image), "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / f"{image.stem}.png").exists()

    # TFLite and ONNX give Keras' detections and masks.
    model = convforge.tasks.load_model(run / "model.keras")
    images = np.stack([np.asarray(keras.utils.load_img(p), "float32") / 255.0
                       for p in sorted((tmp_path / "shapes").rglob("*.png"))[:4]])
    exported = convforge.export(model, tmp_path / "export", formats=["tflite", "onnx"], inputs_for_check=images,
                                progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry
    # Its masks are computed from the boxes NMS kept: neither TFLite's NMS op nor NMS in Python can end it.
    with pytest.raises(convforge.errors.ExportError, match="tflite_postprocess_op.*Mask R-CNN's masks"):
        convforge.export(model, tmp_path / "op", formats=["tflite_postprocess_op"], progress=None, latency_runs=0)
    with pytest.raises(convforge.errors.ExportError, match="nms='python'.*Mask R-CNN's masks.*nms='graph'"):
        convforge.export(model, tmp_path / "py", formats=["tflite"], nms="python", progress=None, latency_runs=0)
    assert not (tmp_path / "op").exists() and not (tmp_path / "py").exists()


def test_mixed_precision_mask_rcnn_trains_and_exports_to_int8(tmp_path):
    """The path a bf16 CPU takes: Mask R-CNN trains under mixed_bfloat16 (losses in float32) and its float32
    copy, masks included, exports to TFLite (= Keras) and full int8, which runs in LiteRT."""
    from convforge.export.verify import _tflite_runner

    task = get_task("instance_segmentation", {**HEAD, "channels": 8, "mask_channels": 8})
    model = task.build_model("resnet18", (64, 64, 3), 2, {"depths": [1, 1, 1, 1], "widths": [8, 8, 8, 8]},
                             dtype="mixed_bfloat16")
    assert model.get_layer("mask_head").compute_dtype == "bfloat16"
    model.compile(optimizer="adam", **task.compile_args(model))
    x = np.random.default_rng(0).uniform(size=(8, 64, 64, 3)).astype("float32")
    y = np.zeros((8, 2, 6 + 64 * 64), "float32")
    y[:, 0, :6] = [0.2, 0.2, 0.6, 0.6, 1, 1]
    mask = np.zeros((64, 64), "float32")
    mask[16:38, 13:38] = 1
    y[:, 0, 6:] = mask.reshape(-1)
    history = model.fit(x, y, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and np.isfinite(history["mask_loss"]).all()
    result = convforge.export(task.inference_model(model), tmp_path, formats=["tflite", "tflite_int8"],
                              representative=x, progress=None, latency_runs=0)
    checks = {a["format"]: a["check"] for a in result["card"]["artifacts"]}
    assert checks["tflite"]["status"] == "passed", checks
    run, info = _tflite_runner(next(tmp_path.glob("*int8*.tflite")), 1)
    out = run(x[:2])
    assert info["input_dtype"] == "int8" and out["masks"].shape == (2, 10, 14, 14)
    assert ((0 <= out["masks"]) & (out["masks"] <= 1)).all()
    keras.backend.clear_session()
