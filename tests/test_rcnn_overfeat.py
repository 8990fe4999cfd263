"""The two classic detectors: OverFeat's sliding window equals cropping every window and classifying it, R-CNN's
selective-search proposals cover the objects and its crops are warped where the boxes say, both learn (the loss
falls within a few steps), and both end in the four detection outputs, reloaded in a fresh process (R-CNN's
Python proposals refused by graph export)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import convforge  # noqa: E402
from convforge.data.shapes import generate_shapes  # noqa: E402
from convforge.errors import ExportError, ModelError  # noqa: E402
from convforge.heads import overfeat, rcnn  # noqa: E402
from convforge.proposals import MEMO, SelectiveSearch, selective_search  # noqa: E402
from convforge.tasks import get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
# A valid-padded AlexNet-like trunk small enough for a test: 16-pixel windows at stride 4.
CONVS = [[8, 3, 2, 0, 1, False, True], [8, 3, 1, 0, 1, False, False]]
SIZE = 72  # alexnet_original's smallest input is 67


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """24 images (72 px, 1-3 shapes each) as normalized float32 arrays, their boxes (normalized yxyx, classes)
    and the packed targets the detection losses read (B, 4, 6)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("shapes_det")
    splits = generate_shapes(root, n=24, size=SIZE, seed=3, val_fraction=0.0, objects=(1, 3))
    coco = json.loads(Path(splits["train"].annotations).read_text())
    images = np.stack([np.asarray(Image.open(Path(splits["train"].images_root) / im["file_name"]), "float32")
                       for im in coco["images"]]) / 127.5 - 1.0
    targets = np.zeros((len(images), 4, 6), "float32")
    objects = [[] for _ in images]
    first = coco["images"][0]["id"]
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        objects[a["image_id"] - first].append(([y / SIZE, x / SIZE, (y + h) / SIZE, (x + w) / SIZE],
                                               a["category_id"] - 1))
    for i, found in enumerate(objects):
        for j, (box, cls) in enumerate(found[:4]):
            targets[i, j] = [*box, cls, 1.0]
    return images, objects, targets


def build(head, **options):
    """A detection model of the small trunk with `head` (training model) and its task."""
    keras.utils.set_random_seed(0)
    task = get_task("detection", {"name": head, "fc_units": 16, **options})
    model = task.build_model("alexnet_original", (SIZE, SIZE, 3), 4, {"convs": CONVS})
    return task, model


def fit(task, model, images, targets, epochs=8):
    """The Keras history of a few epochs (4 steps each) of plain fitting on the small set."""
    model.compile(optimizer=keras.optimizers.Adam(1e-2), **task.compile_args(model))
    return model.fit(images, targets, batch_size=6, epochs=epochs, verbose=0, shuffle=False).history


# ---- OverFeat ------------------------------------------------------------------------------------------------

def test_overfeat_sliding_pass_equals_the_crop_loop(shapes):
    """Every window of every scale cropped and classified alone gives the head's map; the window classifier,
    convolutionalized, gives it too; and the naive loop's detections are the model's."""
    images = shapes[0][:2]
    task, model = build("overfeat", window=16, scales=[0.7, 1.0, 1.4])
    spec = task.spec_of(model)
    assert spec["stride"] == 4 and [s["size"] for s in spec["scales"]] == [[52, 52], [72, 72], [100, 100]]
    # Train a little first, so the check is not on near-constant untrained outputs.
    fit(task, model, shapes[0], shapes[2], epochs=1)
    maps = overfeat.class_maps(model(images), spec)
    naive = overfeat.naive_class_maps(model, images, batch_size=64)
    classifier = overfeat.window_classifier(model)
    for entry, one_pass, loop, scaled in zip(spec["scales"], maps, naive, overfeat.pyramid_images(model, images)):
        assert one_pass.shape == loop.shape == (2, *entry["grid"], 9)
        np.testing.assert_allclose(one_pass, loop, atol=2e-5, err_msg=str(entry))
        slid = convforge.convolutionalize(classifier, (*entry["size"], 3))
        np.testing.assert_allclose(np.asarray(slid(scaled)), one_pass, atol=2e-5)
    inference = task.inference_model(model)
    expected = {k: np.asarray(v) for k, v in inference(images).items()}
    found = overfeat.naive_detect(inference, images)
    np.testing.assert_array_equal(found["num_detections"], expected["num_detections"])
    np.testing.assert_allclose(found["boxes"], expected["boxes"], atol=1e-4)
    # Windows in the raw order: scale by scale, row-major, each `window` pixels of its scale's image.
    windows = overfeat.windows_of(spec)
    assert len(windows) == sum(np.prod(s["grid"]) for s in spec["scales"]) == model.output.shape[1]
    np.testing.assert_allclose(windows[1], [0, 4 / 52, 16 / 52, 20 / 52], atol=1e-6)


def test_overfeat_loss_falls(shapes):
    task, model = build("overfeat", window=16, scales=[0.7, 1.0, 1.4])
    losses = fit(task, model, shapes[0], shapes[2])["loss"]
    assert losses[-1] < 0.8 * losses[0] and losses[-1] == min(losses), losses


def test_overfeat_trains_under_mixed_bfloat16_and_exports_its_float32_copy(shapes, tmp_path):
    """The path a bf16 CPU takes: the window classifier learns under mixed_bfloat16, and its float32 copy exports
    with Keras' detections (NMS layer and TFLite's NMS op alike)."""
    keras.utils.set_random_seed(0)
    task = get_task("detection", {"name": "overfeat", "fc_units": 16, "window": 16, "scales": [0.7, 1.0, 1.4]})
    model = task.build_model("alexnet_original", (SIZE, SIZE, 3), 4, {"convs": CONVS}, dtype="mixed_bfloat16")
    assert model.output.dtype == "float32"
    losses = fit(task, model, shapes[0], shapes[2], epochs=4)["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    result = convforge.export(task.inference_model(model), tmp_path / "bf16",
                              formats=["tflite", "tflite_postprocess_op"],
                              inputs_for_check=shapes[0][:4], progress=None, latency_runs=0)
    assert result["card"]["precision"]["trained"] == "mixed_bfloat16"
    assert all(a["check"]["status"] == "passed" for a in result["card"]["artifacts"])


def test_overfeat_refuses_a_padded_trunk_and_pyramids_without_windows():
    with pytest.raises(ModelError, match="pads its input"):
        convforge.build_model("resnet18", task="detection", num_classes=3, input_shape=(64, 64, 3),
                              head={"name": "overfeat"}, depths=(1, 1, 1, 1), widths=(8, 8, 8, 8))
    with pytest.raises(ModelError, match="no scale"):
        build("overfeat", window=64, scales=[0.5])


# ---- R-CNN ---------------------------------------------------------------------------------------------------

def test_selective_search_covers_the_objects(shapes):
    """Recall at IoU 0.5 of the objects of the small set, from at most 100 proposals each."""
    images, objects, _ = shapes
    found = total = 0
    for image, truth in zip(images, objects):
        proposals = selective_search(image, max_proposals=100)
        assert proposals.dtype == np.float32 and 1 <= len(proposals) <= 100
        assert np.all(proposals[:, 2:] > proposals[:, :2]) and proposals.min() >= 0 and proposals.max() <= 1
        for box, _ in truth:
            y0, x0 = np.maximum(proposals[:, :2], box[:2]).T
            y1, x1 = np.minimum(proposals[:, 2:], box[2:]).T
            inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
            union = np.prod(proposals[:, 2:] - proposals[:, :2], 1) + np.prod(np.subtract(box[2:], box[:2])) - inter
            found += (inter / union).max() >= 0.5
            total += 1
    assert found >= 0.9 * total, (found, total)
    # Deterministic, memoized by content, and the same through the layer (padded, flagged).
    np.testing.assert_array_equal(selective_search(images[0]), selective_search(images[0]))
    MEMO.clear()
    boxes, valid = SelectiveSearch(64)(images[:2])
    assert boxes.shape == (2, 64, 4) and len(MEMO.entries) == 2
    count = int(np.asarray(valid[0]).sum())
    np.testing.assert_array_equal(np.asarray(boxes[0, :count]), selective_search(images[0], max_proposals=64))
    assert not np.asarray(boxes[0, count:]).any()


def test_selective_search_finds_a_flat_square_exactly_in_gray_and_colour():
    image = np.zeros((48, 48, 1), "float32")
    image[10:30, 5:25] = 1.0
    image += np.random.default_rng(0).normal(0, 0.05, image.shape).astype("float32")
    for pixels in (image, image[..., 0], np.repeat(image, 3, axis=-1)):
        found = selective_search(pixels) * 48
        assert np.abs(found - [10, 5, 30, 25]).max(axis=1).min() < 0.5, found


def test_warped_crops_follow_the_box_edges():
    """The whole image's box warps to the image resized (pixel centres aligned); context grows the box."""
    import tensorflow as tf

    image = np.random.default_rng(0).uniform(size=(1, 24, 36, 3)).astype("float32")
    whole = np.array([[[0, 0, 1, 1]]], "float32")
    crops = rcnn.WarpCrops(12)(image, whole)
    np.testing.assert_allclose(np.asarray(crops), np.asarray(tf.image.resize(image, (12, 12))), atol=1e-5)
    half = np.array([[[0.25, 0.25, 0.75, 0.75]]], "float32")
    grown = rcnn.WarpCrops(12, context=3)(image, half)  # 12 / (12 - 6) = twice the box: the whole image
    np.testing.assert_allclose(np.asarray(grown), np.asarray(crops), atol=1e-5)


def test_rcnn_loss_falls_and_proposals_reach_the_objects(shapes):
    task, model = build("rcnn", crop_size=16, context=2, proposals=48)
    history = fit(task, model, shapes[0], shapes[2])
    losses = history["loss"]
    assert losses[-1] < 0.8 * losses[0] and losses[-1] == min(losses), losses
    assert history["proposal_recall"][-1] >= 0.85


def test_rcnn_refuses_context_that_leaves_no_proposal():
    with pytest.raises(ModelError, match="context"):
        build("rcnn", crop_size=16, context=8)


# ---- both: the saved inference model -------------------------------------------------------------------------

def test_saved_detectors_reload_in_a_fresh_process(shapes, tmp_path):
    """model.keras of each holds the whole detector (R-CNN's proposals included): a fresh process loads it with
    convforge's loader and gets the same four outputs; R-CNN's CNN alone is a plain classifier of the crops."""
    images = shapes[0][:2]
    expected = {}
    for head, options in (("overfeat", dict(window=16, scales=[1.0, 1.4])), ("rcnn", dict(crop_size=16))):
        task, model = build(head, **options)
        inference = task.inference_model(model)
        out = {k: np.asarray(v) for k, v in inference(images).items()}
        assert set(out) == {"boxes", "scores", "classes", "num_detections"}
        assert out["boxes"].shape == (2, 100, 4) and out["classes"].dtype == np.int32
        assert out["num_detections"].dtype == np.int32 and out["num_detections"].shape == (2,)
        inference.save(tmp_path / f"{head}.keras")
        expected[head] = out
        if head == "rcnn":
            # Its proposals are Python: a graph artifact would pass here and fail in any other process.
            with pytest.raises(ExportError, match="proposal_classifier"):
                convforge.export(inference, tmp_path / "export", formats=["saved_model"], progress=None)
            raw = np.asarray(model(images))
            proposals = raw[..., :4]
            crops = rcnn.WarpCrops(16, 4)(images, proposals)
            rows = np.asarray(rcnn.proposal_classifier(model)(crops)).reshape(2, raw.shape[1], -1)
            np.testing.assert_allclose(rows, raw[..., 5:], atol=1e-5)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, json, numpy as np\n"
        "from convforge.modelfile import load_model\n"
        "images = np.load(sys.argv[1] + '/images.npy')\n"
        "out = {}\n"
        "for head in ('overfeat', 'rcnn'):\n"
        "    model = load_model(sys.argv[1] + f'/{head}.keras')\n"
        "    out[head] = {k: np.asarray(v).tolist() for k, v in model(images).items()}\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    for head, out in expected.items():
        for key, value in out.items():
            np.testing.assert_allclose(np.asarray(reloaded[head][key]), value, atol=1e-5, err_msg=f"{head} {key}")
