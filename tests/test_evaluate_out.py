"""`convforge evaluate --out DIR` and `convforge predict --out DIR` with a tiny detector: metrics.json equals
pycocotools' COCOeval run on the written annotations and detections.json; detections carry the dataset's own
image and category ids and boxes in pixels of the original image, whatever its size; predict draws each image
at its own size; bad paths fail in one line."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convforge.cli import main
from convforge.evaluate.coco import STAT_NAMES, detections_to_coco, evaluate_detections
from convforge.recipes import load_recipe

pytest.importorskip("pycocotools")
ROOT = Path(__file__).resolve().parents[1]
SSD = ROOT / "recipes" / "detection" / "ssd_resnet18_shapes.yaml"
# Each val image stretched by whole factors (width, height): nearest upscaling, so that bilinear resizing back to
# the 64 px input gives exactly the original's pixels, and the detector sees the very same input.
STRETCH = [(3, 2), (2, 3)]
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run folder of an untrained tiny SSD on 24 shapes images (64 px) as training leaves it (model.keras
    ending in NMS, recipe.yaml, class names, preprocessing), and a COCO copy of its 6 val images stretched to
    other, non-square sizes, with other image and category ids."""
    import keras

    from convforge.data import preprocessing
    from convforge.tasks import get_task
    from convforge.train.datasets import open_source

    root = tmp_path_factory.mktemp("detector")
    sets = [f"data.train.path={root / 'shapes'}", "data.train.n=24", "data.train.size=64", "data.train.objects=[1,2]",
            "data.train.val_fraction=0.25", "model.input_shape=[64,64,3]", "data.batch_size=4",
            "model.options={depths: [1,1,1,1], widths: [8,8,16,16]}", "head={channels: 8, max_detections: 20}"]
    recipe = load_recipe(SSD, overrides=sets)
    names = open_source(recipe.data.val, False).class_names  # generates the set
    task = get_task("detection", recipe.head)
    keras.utils.set_random_seed(0)  # the same untrained detections every time
    model = task.build_model("resnet18", (64, 64, 3), len(names), recipe.model.options)
    (root / "run").mkdir()
    task.inference_model(model).save(root / "run" / "model.keras")
    (root / "run" / "recipe.yaml").write_text(recipe.to_yaml())
    (root / "run" / "class_names.json").write_text(json.dumps(names))
    (root / "run" / "preprocessing.json").write_text(json.dumps(preprocessing((64, 64, 3), "imagenet")))
    val = json.loads((root / "shapes" / "annotations" / "instances_val.json").read_text())
    (root / "stretched").mkdir()
    images = []
    for k, image in enumerate(val["images"]):
        fx, fy = STRETCH[k % 2]
        pixels = np.asarray(Image.open(root / "shapes" / "images" / "val" / image["file_name"]))
        Image.fromarray(pixels.repeat(fy, axis=0).repeat(fx, axis=1)).save(root / "stretched" / image["file_name"])
        images.append({**image, "id": image["id"] + 1000, "width": 64 * fx, "height": 64 * fy})
    factors = {image["id"]: STRETCH[k % 2] for k, image in enumerate(val["images"])}
    annotations = []
    for a in val["annotations"]:
        fx, fy = factors[a["image_id"]]
        x, y, w, h = a["bbox"]
        annotations.append({"id": a["id"], "image_id": a["image_id"] + 1000, "category_id": a["category_id"] * 10,
                            "bbox": [x * fx, y * fy, w * fx, h * fy], "area": a["area"] * fx * fy, "iscrowd": 0})
    categories = [{"id": c["id"] * 10, "name": c["name"]} for c in val["categories"]]
    stretched = root / "stretched.json"
    stretched.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return {"dir": root / "run", "root": root, "stretched": stretched, "val": val}


def _cocoeval(annotations, detections):
    """COCOeval's stats of two COCO files, run here as a user would, without convforge."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        evaluator = COCOeval(gt, gt.loadRes(str(detections)), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, evaluator.stats))


def _evaluate(run, out, *sets):
    """`convforge evaluate RUN --out OUT [--set ...]`: (metrics.json, detections.json)."""
    assert main(["evaluate", str(run["dir"]), "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "detections.json").read_text())


def test_evaluate_out_writes_coco_files_that_cocoeval_scores_the_same(run, capsys):
    out = run["root"] / "eval" / "square"  # its parent does not exist either
    metrics, detections = _evaluate(run, out)
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "metrics.json"]
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    # The shapes source is a COCO file: scored against it, not a copy.
    assert Path(metrics["annotations"]) == run["root"] / "shapes" / "annotations" / "instances_val.json"
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"} <= set(metrics)
    assert detections and set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
    assert metrics["count"] == 6 and metrics["detections"] == len(detections)
    assert {d["image_id"] for d in detections} <= {i["id"] for i in run["val"]["images"]}
    assert {d["category_id"] for d in detections} <= {c["id"] for c in run["val"]["categories"]}
    stats = _cocoeval(metrics["annotations"], out / "detections.json")
    assert {k: metrics[k] for k in STAT_NAMES} == pytest.approx(stats, abs=1e-12)

    # Stretched copies of the same images give the same input, so the same detections, in their own pixels and ids.
    out_stretched = run["root"] / "eval" / "stretched"
    val = f"data.val={{source: coco, annotations: {run['stretched']}, images: {run['root'] / 'stretched'}}}"
    metrics_s, detections_s = _evaluate(run, out_stretched, val)
    assert Path(metrics_s["annotations"]) == run["stretched"]
    assert len(detections_s) == len(detections)
    order = [i["id"] for i in run["val"]["images"]]
    for d, s in zip(detections, detections_s):
        fx, fy = STRETCH[order.index(d["image_id"]) % 2]
        assert (s["image_id"], s["category_id"], s["score"]) == (d["image_id"] + 1000, d["category_id"] * 10,
                                                                 d["score"])
        assert s["bbox"] == pytest.approx([d["bbox"][0] * fx, d["bbox"][1] * fy, d["bbox"][2] * fx,
                                           d["bbox"][3] * fy], abs=0.005 * (1 + max(fx, fy)))
    stats = _cocoeval(metrics_s["annotations"], out_stretched / "detections.json")
    assert {k: metrics_s[k] for k in STAT_NAMES} == pytest.approx(stats, abs=1e-12)
    # IoU does not change when both axes are scaled, so neither does AP; only the size ranges (APs ...) move.
    assert metrics["AP50"] > 0 and all(metrics_s[k] == pytest.approx(metrics[k]) for k in ("AP", "AP50", "AR100"))


def test_a_source_without_a_coco_file_gets_its_ground_truth_written(run, tmp_path):
    """VOC, image folders and sources that skipped files have no COCO file to score against: the ground truth
    built from their records is written as annotations.json and named in the metrics."""
    from convforge.data import build_dataset
    from convforge.data.sources import load_source
    from convforge.modelfile import load_model

    shapes = run["root"] / "shapes"
    records = load_source({"source": "coco", "annotations": str(shapes / "annotations" / "instances_val.json"),
                           "images_root": str(shapes / "images" / "val")})
    records = dataclasses.replace(records, annotations_file=None)
    batches = build_dataset(records, "detection", (64, 64, 3), 4, False)
    model = load_model(run["dir"] / "model.keras")
    metrics = evaluate_detections(model, batches, records.class_names, records, tmp_path)
    assert Path(metrics["annotations"]) == tmp_path / "annotations.json"
    written = json.loads((tmp_path / "annotations.json").read_text())
    assert [i["id"] for i in written["images"]] == [i["id"] for i in run["val"]["images"]]
    assert [c["id"] for c in written["categories"]] == [c["id"] for c in run["val"]["categories"]]
    stats = _cocoeval(tmp_path / "annotations.json", tmp_path / "detections.json")
    assert {k: metrics[k] for k in STAT_NAMES} == pytest.approx(stats, abs=1e-12)


def test_detections_are_converted_to_original_pixels_of_a_non_square_image():
    """Normalized yxyx boxes of the model input are fractions of the original image, since preprocessing
    stretches it to the input size (no letterbox): x scales by the original width, y by its height."""
    import tensorflow as tf

    from convforge import preprocessing

    boxes = np.array([[0.1, 0.25, 0.5, 0.75], [0.0, 0.0, 1.0, 1.0], [0.2, 0.5, 0.3, 0.55]])
    results = detections_to_coco(7, 200, 100, boxes, np.array([0.9, 0.5, 0.25]), np.array([1, 0, 1]), [3, 8],
                                 count=2)
    assert results == [{"image_id": 7, "category_id": 8, "bbox": [50.0, 10.0, 100.0, 40.0], "score": 0.9},
                       {"image_id": 7, "category_id": 3, "bbox": [0.0, 0.0, 200.0, 100.0], "score": 0.5}]
    assert detections_to_coco(7, 200, 100, boxes[:1], [0.9], [1], None)[0]["category_id"] == 1

    # The premise, checked on the pixels: a rectangle at x 50..150, y 10..50 of a 200 x 100 image covers the
    # same fractions of the 64 x 64 input the model sees.
    image = np.zeros((100, 200, 3), "uint8")
    image[10:50, 50:150] = 255
    resized = np.asarray(preprocessing.resize(tf.constant(image[None]), {"resize": [64, 64]}))[0, ..., 0]
    rows, cols = np.nonzero(resized > 127)
    assert (rows.min() / 64, (rows.max() + 1) / 64) == pytest.approx((0.1, 0.5), abs=1 / 64)
    assert (cols.min() / 64, (cols.max() + 1) / 64) == pytest.approx((0.25, 0.75), abs=1 / 64)


def test_predict_out_draws_each_image_at_its_own_size(run, tmp_path, capsys):
    images = [str(run["root"] / "stretched" / i["file_name"]) for i in run["val"]["images"][:2]]
    Image.open(images[1]).save(tmp_path / "second.png")  # another stem; (64 * 2) x (64 * 3)
    images[1] = str(tmp_path / "second.png")
    out = tmp_path / "drawn" / "new"
    assert main(["predict", str(run["dir"] / "model.keras"), *images, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    classes = [c["name"] for c in run["val"]["categories"]]
    assert all(any(f"{path}: {name} " in printed for name in classes) for path in images), printed
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {f"{Path(images[0]).stem}.png": Image.open(images[0]).size, "second.png": (128, 192)}
    assert Image.open(images[0]).size != (128, 192)
    drawn = np.asarray(Image.open(out / "second.png").convert("RGB"))
    assert ((drawn[..., 0] == 255) & (drawn[..., 1] == 40)).any()  # a box outline, with its label in yellow
    assert ((drawn[..., 0] > 200) & (drawn[..., 1] > 200) & (drawn[..., 2] < 60)).any()


@pytest.mark.parametrize("case", ["missing_image", "out_under_a_file", "unknown_run", "evaluate_out_under_a_file"])
def test_bad_paths_fail_in_one_line_writing_nothing(case, run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    model = str(run["dir"] / "model.keras")
    image = str(run["root"] / "stretched" / run["val"]["images"][0]["file_name"])
    argv, message = {
        "missing_image": (["predict", model, image, "missing.png", "--out", "out"], "'missing.png' could not be read"),
        "out_under_a_file": (["predict", model, image, "--out", "file/out"], "cannot be created"),
        "unknown_run": (["evaluate", "runs/nothing_here", "--out", "out"], "is not a recipe (.yaml), a run folder"),
        "evaluate_out_under_a_file": (["evaluate", str(run["dir"]), "--out", "file/out"], "cannot be created"),
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
