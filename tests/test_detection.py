"""Detection end to end on a small instance: the SSD head trains from a recipe (loss falls), the run's model.keras
is the inference model ending in NMS, COCO AP lands in metrics.json, and the exported artifacts give Keras'
detections in their runtimes."""
import math
import json
from pathlib import Path

import numpy as np
import pytest

import convforge
from convforge.errors import RecipeError
from convforge.recipes import load_recipe
from convforge.tasks import get_task
from runchecks import check_finished_run, history_rows
from smallmodels import tiny

ROOT = Path(__file__).resolve().parents[1]
SSD = ROOT / "recipes" / "detection" / "ssd_resnet18_shapes.yaml"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_anchor_outputs_line_up_with_the_anchor_grid():
    from convforge.heads.single_shot import anchors_of

    model = convforge.build_model("resnet18", task="detection", num_classes=3, input_shape=(64, 64, 3),
                                  widths=(8, 8, 8, 8), head={"anchor_scales": [1.0], "levels": ["C4", "C5"]})
    # C4 4x4 and C5 2x2 cells, 3 ratios each; per anchor 4 deltas and 3 + 1 class logits.
    spec = get_task("detection").spec_of(model)
    assert model.output.shape[1:] == (20 * 3, 8) == (len(anchors_of(spec)), 8)
    assert spec["strides"] == {"C4": 16, "C5": 32} and spec["num_classes"] == 3


def test_ssd_trains_evaluates_and_exports_with_nms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = tiny(SSD, shapes_dir=tmp_path / "shapes", epochs=3, steps=4) + [
        "data.train.objects=[1,3]", "model.options={depths: [1,1,1,1], widths: [8,16,32,64]}",
        "model.input_shape=[64,64,3]", "data.train.size=64", "head={channels: 16, max_detections: 20}",
        "train.optimizer.learning_rate=0.01"]
    recipe = load_recipe(SSD, overrides=sets)
    result = convforge.train(recipe, printer=lambda *_: None, verbose=0)
    run = Path(result["run_dir"])
    check_finished_run(run, recipe, epochs=3)  # test_train.py leaves this recipe to this test
    losses = [float(r["loss"]) for r in history_rows(run)]
    assert losses[-1] < losses[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val_AP", "val_AP50", "val_AP75", "val_AR100"} <= set(metrics) and 0 <= metrics["val_AP50"] <= 1

    # A fresh process loads it: the head's layers register when convforge loads a model file.
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", "import sys; from convforge.modelfile import load_model; "
                             "print(sorted(load_model(sys.argv[1]).output))", str(run / "model.keras")],
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and "num_detections" in loaded.stdout, loaded.stderr[-2000:]
    model = convforge.tasks.load_model(run / "model.keras")
    assert get_task("detection").recognizes(model)
    assert model.output["classes"].dtype == "int32" and model.output["boxes"].shape[1:] == (20, 4)
    images = np.random.default_rng(0).normal(size=(4, 64, 64, 3)).astype("float32")
    # tflite_postprocess_op: the same detections from TFLite's own NMS op, one image per call.
    exported = convforge.export(model, tmp_path / "export", formats=["saved_model", "tflite", "onnx",
                                                                     "tflite_postprocess_op"],
                                inputs_for_check=images, progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        check = entry["check"]
        assert check["status"] == "passed", entry["format"]
        assert check["per_output"]["num_detections"]["agreement"] == 1.0, entry["format"]
    from convforge.export.tflite import custom_op_names

    op_file = tmp_path / "export" / "model_postprocess_op.tflite"
    assert custom_op_names(op_file.read_bytes()) == ["TFLite_Detection_PostProcess"]
    assert custom_op_names((tmp_path / "export" / "model.tflite").read_bytes()) == []

    # NMS in Python: the artifacts end at the decoded candidates; the card's NMS layer finishes them, and the
    # recipe's AP judges each artifact through it (the same AP as Keras: the same detections).
    from convforge.export import apply_nms
    from convforge.export.verify import runner
    from convforge.runs import export_run

    result = export_run(run, tmp_path / "python_nms", ["tflite", "onnx"], nms="python", progress=None)
    card = result["card"]
    assert [o["name"] for o in card["outputs"]] == ["boxes", "scores"]
    assert card["postprocess"]["nms"]["where"] == "python"
    want = model(images, training=False)
    for entry in card["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["metric"]["drop_points"] == 0, entry
        got = apply_nms(runner(entry["format"], result["paths"][entry["format"]])[0](images), card)
        np.testing.assert_array_equal(got["num_detections"], np.asarray(want["num_detections"]))
        np.testing.assert_array_equal(got["classes"], np.asarray(want["classes"]))
        np.testing.assert_allclose(got["boxes"], np.asarray(want["boxes"]), atol=1e-4)


def test_a_format_that_cannot_hold_nms_names_the_op_and_offers_nms_in_python(tmp_path):
    """An NMS built on combined_non_max_suppression (no TFLite builtin): the TFLite export names the op and offers
    nms='python', which then exports the graph without it."""
    import keras
    import tensorflow as tf

    from convforge.layers.nms import NonMaxSuppression

    class CombinedNMS(NonMaxSuppression):
        """NMS by tf.image.combined_non_max_suppression."""

        def call(self, boxes, scores):
            out = tf.image.combined_non_max_suppression(boxes[:, :, None], scores, self.max_detections,
                                                        self.max_detections, self.iou_threshold,
                                                        self.score_threshold, clip_boxes=False)
            return {"boxes": out.nmsed_boxes, "scores": out.nmsed_scores,
                    "classes": tf.cast(out.nmsed_classes, tf.int32), "num_detections": out.valid_detections}

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(inputs)
    corners = keras.layers.Reshape((-1, 2, 2))(keras.layers.Conv2D(4, 1, activation="sigmoid")(x))
    boxes = keras.layers.Reshape((-1, 4))(keras.layers.Concatenate(-2)([
        keras.ops.min(corners, axis=-2, keepdims=True), keras.ops.max(corners, axis=-2, keepdims=True)]))
    scores = keras.layers.Reshape((-1, 3))(keras.layers.Conv2D(3, 1, activation="sigmoid")(x))
    model = keras.Model(inputs, CombinedNMS(5, 0.5, 0.05)(boxes, scores))
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    with pytest.raises(convforge.errors.ExportError, match=r"CombinedNonMaxSuppression.*nms='python'"):
        convforge.export(model, tmp_path / "graph", formats=["tflite"], progress=None, inputs_for_check=images)
    assert not (tmp_path / "graph").exists()
    result = convforge.export(model, tmp_path / "python", formats=["tflite"], nms="python", progress=None,
                              inputs_for_check=images, latency_runs=0)
    assert result["card"]["artifacts"][0]["check"]["status"] == "passed"


def test_a_detection_head_refuses_a_backbone_without_its_levels():
    with pytest.raises(RecipeError, match="squeezenet1_1 has feature levels .* the detection head needs C3, C4, "
                                          "C5, and C5 is missing"):
        load_recipe(SSD, overrides=["model.architecture=squeezenet1_1", "model.options={}"])
    assert load_recipe(SSD, overrides=["model.architecture=squeezenet1_1", "model.options={}",
                                       "head={levels: [C3, C4]}"]).head["levels"] == ["C3", "C4"]


@pytest.mark.parametrize("policy,head", [("mixed_bfloat16", "ssd"), ("mixed_float16", "yolo"),
                                         ("mixed_bfloat16", "faster_rcnn")])
def test_mixed_precision_detectors_train_and_export(tmp_path, policy, head):
    """The paths a bf16 CPU or a GPU takes: each head trains under a mixed policy (loss in float32) and its
    float32 copy, decoding and NMS included, exports to SavedModel, TFLite and ONNX with Keras' detections."""
    import keras

    task = get_task("detection", {"name": head, "channels": 8, "max_detections": 10,
                                  **({"levels": ["C4"]} if head == "faster_rcnn" else {})})
    model = task.build_model("resnet18", (64, 64, 3), 3, {"depths": [1, 1, 1, 1], "widths": [8, 8, 8, 8]},
                             dtype=policy)
    assert model.output.dtype == "float32" and model.layers[5].compute_dtype != "float32"
    model.compile(optimizer="adam", **task.compile_args(model))
    x = np.random.default_rng(0).uniform(size=(8, 64, 64, 3)).astype("float32")
    y = np.zeros((8, 4, 6), "float32")
    y[:, 0] = [0.2, 0.2, 0.6, 0.6, 1, 1]
    losses = model.fit(x, y, epochs=3, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    result = convforge.export(task.inference_model(model), tmp_path / policy,
                              formats=["saved_model", "tflite", "onnx", "tflite_int8", "tflite_postprocess_op"],
                              representative=x, progress=None, latency_runs=0)
    assert result["card"]["precision"]["trained"] == policy
    checks = {a["format"]: a["check"] for a in result["card"]["artifacts"]}
    fp32 = ("saved_model", "tflite", "onnx", "tflite_postprocess_op")
    assert all(checks[f]["status"] == "passed" for f in fp32), checks
    # Full-integer: the backbone and head in int8, NMS's division left in float32, so it runs in LiteRT; the
    # padding stays padding (validity is NMS's mask, not a filler score that int8 would clamp).
    from convforge.export import float_ops_under_int8
    from convforge.export.verify import _tflite_runner

    assert float_ops_under_int8(model) == () and float_ops_under_int8(task.inference_model(model)) == ("DIV",)
    run, info = _tflite_runner(next((tmp_path / policy).glob("*int8*.tflite")), 1)
    out = run(x)
    assert info["input_dtype"] == "int8"
    count = out["num_detections"].astype(int)
    assert ((0 <= count) & (count <= 10)).all()
    for b, n in enumerate(count):
        assert np.all(np.diff(out["scores"][b, :n]) <= 1e-6) and np.all(out["scores"][b, n:] == 0)
        assert np.all((0 <= out["classes"][b, :n]) & (out["classes"][b, :n] < 3))
    with pytest.raises(convforge.errors.ExportError, match="int8_io='int8'"):
        convforge.export(task.inference_model(model), tmp_path / "uint8", formats=["tflite_int8"],
                         representative=x, int8_io="uint8", progress=None, latency_runs=0)
    keras.backend.clear_session()


def test_yolo_assignment_gives_every_object_nearby_anchors_of_fitting_shape():
    from convforge.heads.yolo import assign, decode
    from convforge.layers.anchors import anchor_spec, anchor_strides, anchors_of

    spec = anchor_spec((64, 64), {"C3": 8, "C4": 16}, anchor_size=2.0, scales=[1.0], aspect_ratios=[0.5, 1, 2])
    anchors, strides = anchors_of(spec), anchor_strides(spec)
    gt = np.array([[[0.1, 0.1, 0.3, 0.2], [0.5, 0.4, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]]], "float32")
    valid = np.array([[True, True, False]])
    index, positive = (np.asarray(t) for t in assign(anchors, strides, gt, valid, match_ratio=4.0))
    centre, size = (anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2:] - anchors[:, :2]
    for m in range(2):
        mine = positive[0] & (index[0] == m)
        assert mine.any()
        gt_centre, gt_size = (gt[0, m, :2] + gt[0, m, 2:]) / 2, gt[0, m, 2:] - gt[0, m, :2]
        # within one stride of the object's centre, so the bounded offsets (2 sigmoid - 1 strides) can reach it
        assert np.all(np.abs(centre[mine] - gt_centre) < strides[mine])
        ratio = gt_size / size[mine]
        assert np.all(np.maximum(ratio, 1 / ratio).max(-1) < 4.0)
    assert not (positive[0] & (index[0] == 2)).any()  # padding learns nothing
    # Zero box parameters decode to the anchor itself; the extremes reach one stride and four sizes.
    np.testing.assert_allclose(np.asarray(decode(anchors, strides, np.zeros((len(anchors), 4), "float32"))),
                               anchors, atol=1e-6)
    far = np.asarray(decode(anchors, strides, np.full((len(anchors), 4), 30.0, "float32")))
    np.testing.assert_allclose((far[:, 2:] - far[:, :2]) / size, 4.0, rtol=1e-5)


def _tiny_voc(root, names):
    """A VOC-layout folder with `names` images per split, objects of two VOC classes."""
    from PIL import Image

    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / f"JPEGImages/{name}.jpg")
        objects = "".join(f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
                          f"<xmax>{x + 20}</xmax><ymax>{y + 16}</ymax></bndbox></object>"
                          for c, x, y in (("dog", 3, 5), ("cat", 30, 20)))
        (root / f"Annotations/{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height>"
            f"<depth>3</depth></size>{objects}</annotation>")
    for split in ("train", "val"):
        (root / f"ImageSets/Main/{split}.txt").write_text("\n".join(names) + "\n")


@pytest.mark.parametrize("template", ["yolo_coco", "ssd_voc"])
def test_templates_train_on_a_users_coco_and_voc_files(template, tmp_path, monkeypatch):
    """The template recipes for users' data validate and train a step once their paths point at real files."""
    from convforge.data.shapes import generate_shapes

    monkeypatch.chdir(tmp_path)
    path = ROOT / "recipes" / "templates" / f"{template}.yaml"
    with pytest.raises(RecipeError, match="not found"):  # as shipped, the placeholders name no files
        load_recipe(path)
    if template == "yolo_coco":
        generate_shapes(tmp_path / "coco", n=16, size=48, objects=(1, 3))
        files = [f"data.{s}.annotations={tmp_path}/coco/annotations/instances_{split}.json" for s, split in
                 (("train", "train"), ("val", "val"))]
        files += [f"data.{s}.images={tmp_path}/coco/images/{split}" for s, split in (("train", "train"), ("val", "val"))]
    else:
        _tiny_voc(tmp_path / "voc", ["a", "b", "c", "d"])
        files = [f"data.train.root={tmp_path}/voc", f"data.val.root={tmp_path}/voc"]
    sets = files + ["train.epochs=1", "train.steps_per_epoch=1", "data.batch_size=4", "train.schedule=constant",
                    "model.input_shape=[64,64,3]", "model.options={depths: [1,1,1,1], widths: [8,16,32,64]}",
                    "head.channels=8", "export.formats=[saved_model]"]
    recipe = load_recipe(path, overrides=sets)
    result = convforge.train(recipe, printer=lambda *_: None, verbose=0)
    metrics = json.loads((Path(result["run_dir"]) / "metrics.json").read_text())
    assert math.isfinite(metrics["loss"]) and 0 <= metrics["val_AP50"] <= 1
