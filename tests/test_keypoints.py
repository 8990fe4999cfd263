"""Keypoints: heatmap encoding and decoding, flips that swap the 300-W mirror points, NME and PCK against numpy
references, the faces generator and the .pts loader, and both heads trained, evaluated, drawn and exported."""
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
HEATMAP = ROOT / "recipes" / "keypoints" / "face_heatmap_resnet18_faces.yaml"
REGRESSION = ROOT / "recipes" / "keypoints" / "face_regression_resnet18_faces.yaml"
SMALL = {"depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64]}
# The 300-W mirror pairs (0-based), as face-alignment code lists them for flip augmentation.
MIRROR_300W = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
               + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
               + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])


def test_heatmaps_decode_to_the_points_they_encode():
    from convforge.heads.keypoints import decode_heatmaps, render_heatmaps

    rng = np.random.default_rng(0)
    points = rng.uniform(0.03, 0.97, (3, 17, 2))
    points[0, 0] = [0.5 / 24, 0.5 / 24]  # on the first cell's centre: no neighbour on two sides
    keypoints = np.concatenate([points, np.full((3, 17, 1), 2.0)], -1).astype("float32")
    keypoints[1, 3, 2] = 0  # unlabelled: an empty map
    maps = np.asarray(render_heatmaps(keypoints, 24, 24, 1.5))
    assert maps.shape == (3, 24, 24, 17) and maps[1, :, :, 3].max() == 0
    decoded, scores = (np.asarray(v) for v in decode_heatmaps(maps, sigma=1.5))
    labelled = keypoints[..., 2] > 0
    error_px = np.abs(decoded - points)[labelled] * 96  # in pixels of a 96 px input (stride 4)
    assert error_px.max() < 0.5, error_px.max()
    assert np.all(scores[labelled] > 0.79) and scores[1, 3] == 0  # a peak sits within half a cell of its point
    # Logits trained towards the Gaussians (the cross-entropy head's) decode alike: a log-Gaussian is a parabola,
    # and the target's own distribution scores about 1 (its peak cell holds 0.9-1 of a continuous peak).
    logits = np.log(np.maximum(maps, 1e-30))[:1] + 3.0  # any offset: a softmax ignores it
    decoded, scores = (np.asarray(v) for v in decode_heatmaps(logits, sigma=1.5, logits=True))
    assert np.abs(decoded - points[:1]).max() * 96 < 0.5 and np.all(scores > 0.9)


def test_flip_pairs_of_the_face_landmarks_are_the_300w_mirror_points():
    from convforge.data.instances import flip_pairs

    assert sorted(tuple(sorted(p)) for p in flip_pairs(data.LANDMARK_NAMES)) == sorted(MIRROR_300W)


def test_a_flip_mirrors_the_landmarks_and_swaps_left_and_right():
    import tensorflow as tf

    from convforge.data.augment import build_augmenter
    from convforge.tasks import get_task

    rng = np.random.default_rng(1)
    points = np.concatenate([rng.uniform(0.1, 0.9, (8, 68, 2)), np.full((8, 68, 1), 2.0)], -1).astype("float32")
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    task = get_task("keypoints")
    flipped = kept = 0
    for seed in range(3):
        augmenter = build_augmenter(["flip"], task, (32, 32, 3), seed=seed, keypoint_names=data.LANDMARK_NAMES)
        out_images, out = augmenter(tf.constant(images), tf.constant(points))
        out_images, out = np.asarray(out_images), np.asarray(out)
        for i in range(len(points)):
            if np.allclose(out_images[i], images[i][:, ::-1]):
                flipped += 1
                mirror = {a: b for p in MIRROR_300W for a, b in (p, p[::-1])}
                order = [mirror.get(k, k) for k in range(68)]
                np.testing.assert_allclose(out[i, :, 0], 1.0 - points[i, order, 0], atol=1e-4)
                np.testing.assert_allclose(out[i, :, 1], points[i, order, 1], atol=1e-4)
            else:
                kept += 1
                np.testing.assert_allclose(out[i], points[i], atol=1e-4)
    assert flipped and kept


def test_nme_and_pck_equal_their_definitions():
    from convforge.evaluate.keypoints import nme, pck

    names = ["right_eye_outer", "left_eye_outer", "nose_tip", "left_shoulder", "right_hip"]
    true = np.array([[[10, 10], [30, 10], [20, 20], [10, 30], [30, 50]],
                     [[0, 0], [40, 0], [20, 20], [0, 40], [40, 40]]], "float64")
    pred = true + np.array([[[1, 0], [0, 2], [3, 4], [0, 0], [8, 0]], [[0, 0], [0, 0], [0, 0], [0, 0], [0, 0]]])
    vis = np.array([[2, 2, 2, 1, 2], [2, 2, 0, 2, 2]])
    # Image 0: errors 1, 2, 5, 0, 8 over 5 labelled points, inter-ocular 20; image 1: no error.
    result = nme(pred, true, vis, names)
    assert result["nme"] == pytest.approx((16 / 5 / 20 + 0) / 2) and result["nme_normalization"] == "inter_ocular"
    assert result["failure_rate"] == pytest.approx(0.5)  # 0.16 > 0.1
    # Without eye names: the geometric mean of the labelled points' box (image 0: 20 x 40).
    assert nme(pred, true, vis)["nme"] == pytest.approx((16 / 5 / np.sqrt(20 * 40)) / 2)
    # PCK@0.2 by the torso (left shoulder to right hip): image 0 |(10,30)-(30,50)| = 28.28 -> 5.66 px.
    torso = pck(pred, true, vis, names)
    assert torso["pck_normalization"] == "torso"
    assert torso["pck"] == pytest.approx((4 + 4) / 9)  # image 0: 1, 2, 5, 0 within 5.66, 8 not; image 1: all 4
    assert pck(pred, true, vis, alpha=0.2)["pck"] == 1.0  # by the box: 40 -> 8 px, and an error of 8 is within


def test_the_faces_set_is_seeded_coco_keypoints_read_back_with_names(tmp_path):
    from convforge.cli import main as cli_main

    assert cli_main(["data", "faces", str(tmp_path / "a"), "--n", "10", "--size", "48"]) == 0
    splits = data.ensure_faces(tmp_path / "b", n=10, size=48)
    first = (tmp_path / "a" / "annotations" / "instances_train.json").read_bytes()
    assert first == Path(splits["train"].annotations).read_bytes()
    records = data.coco(*splits["train"])
    assert len(records) == 8 and records.keypoint_names == list(data.LANDMARK_NAMES)
    for record in records:
        (face,) = record["objects"]
        points = np.asarray(face["keypoints"]).reshape(68, 3)
        assert (points[:, 2] == 2).all() and (points[:, :2] >= 0).all() and (points[:, :2] < 48).all()
    five = data.coco(*data.ensure_faces(tmp_path / "c", n=4, size=48, landmarks=5)["train"])
    assert five.keypoint_names == ["right_eye_outer", "left_eye_outer", "nose_tip", "right_mouth_corner",
                                   "left_mouth_corner"]
    with pytest.raises(DataError, match="landmarks=7 is not accepted"):
        data.generate_faces(tmp_path / "d", n=4, landmarks=7)


def test_pts_files_load_as_face_landmarks_and_bad_ones_are_named(tmp_path):
    from PIL import Image

    from convforge.data.sources.pts import pts

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    points = rng.uniform(5, 35, (68, 2))
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    (tmp_path / "a.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    (tmp_path / "b.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")  # says 68, holds 1
    with pytest.warns(data.DataWarning, match=r"b.pts: is not a .pts file \(n_points says 68 but 1 points follow\)"):
        records = pts(tmp_path, one_based=True)
    assert len(records) == 1 and records.keypoint_names == list(data.LANDMARK_NAMES)
    face = records[0]["objects"][0]
    np.testing.assert_allclose(np.asarray(face["keypoints"]).reshape(68, 3)[:, :2], points - 1, atol=1e-3)
    with pytest.raises(DataError, match=r"b.pts in pts.* was rejected: is not a .pts file"):
        pts(tmp_path, strict=True)


def test_the_heatmap_recipe_trains_evaluates_draws_and_exports(tmp_path, monkeypatch):
    """Face heatmaps: the loss falls; evaluation writes NME, failure rate and PCK; predict draws the landmarks;
    TFLite and ONNX give Keras' keypoints."""
    from convforge.cli import main as cli_main
    from convforge.runs import evaluate

    monkeypatch.chdir(tmp_path)
    sets = [*tiny(HEATMAP, epochs=3, steps=4), "data.train.path=faces", "data.train.n=96", "data.train.size=48",
            "model.input_shape=[48,48,3]", f"model.options={json.dumps(SMALL)}", "head.channels=16",
            "train.optimizer.learning_rate=0.005"]
    recipe = load_recipe(HEATMAP, overrides=sets)
    result = convforge.train(recipe, printer=lambda *_: None, verbose=0)
    run = Path(result["run_dir"])
    check_finished_run(run, recipe, epochs=3)  # test_train.py leaves this recipe to this test
    history = history_rows(run)
    assert float(history[-1]["loss"]) < float(history[0]["loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val_nme", "val_failure_rate", "val_pck", "val_point_error"} <= set(metrics)
    assert metrics["val_nme_normalization"] == "inter_ocular" and 0 < metrics["val_nme"] < 2
    assert json.loads((run / "class_names.json").read_text()) == list(data.LANDMARK_NAMES)

    evaluate(run, out=tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["nme"] == pytest.approx(metrics["val_nme"])

    image = sorted((tmp_path / "faces" / "images" / "val").glob("*.png"))[0]
    assert cli_main(["predict", str(run / "model.keras"), str(image), "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / f"{image.stem}.png").exists()

    model = convforge.tasks.load_model(run / "model.keras")
    assert set(model.output) == {"keypoints", "scores"} and model.output["keypoints"].shape[1:] == (68, 2)
    images = np.stack([np.asarray(keras.utils.load_img(p), "float32") / 255.0
                       for p in sorted((tmp_path / "faces" / "images" / "val").glob("*.png"))[:4]])
    exported = convforge.export(model, tmp_path / "export", formats=["tflite", "onnx"], inputs_for_check=images,
                                progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "float32"])
def test_the_regression_head_trains_and_its_int8_export_runs(tmp_path, policy):
    """Direct regression under a forced policy (the path a bf16 CPU takes) and float32: the Wing loss falls, and
    the float32 model's full-int8 TFLite keeps the keypoints within a few pixels of Keras'."""
    from convforge.export.verify import _tflite_runner
    from convforge.tasks import get_task

    task = get_task("keypoints", {"name": "regression", "hidden_units": 32})
    model = task.build_model("resnet18", (48, 48, 3), 5, SMALL, dtype=policy)
    model.compile(optimizer=keras.optimizers.Adam(0.003), **task.compile_args(model))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 48, 48, 3)).astype("float32")
    y = np.concatenate([rng.uniform(0.2, 0.8, (32, 5, 2)), np.full((32, 5, 1), 2.0)], -1).astype("float32")
    y[:, 4, 2] = 0  # one unlabelled point
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and np.isfinite(history["point_error"]).all()
    if policy != "float32":
        return
    inference = task.inference_model(model)
    # Coordinates and visibility logits reach the outputs as two tensors (each its own int8 scale), not joined.
    assert "keypoints_raw" not in {layer.name for layer in inference.layers}
    exported = convforge.export(inference, tmp_path, formats=["tflite", "tflite_int8"], representative=x,
                                progress=None, latency_runs=0)
    assert {a["format"]: a["check"]["status"] for a in exported["card"]["artifacts"]}["tflite"] == "passed"
    run, info = _tflite_runner(next(tmp_path.glob("*int8*.tflite")), 1)
    out = run(x[:4])
    reference = np.asarray(inference(x[:4])["keypoints"])
    assert info["input_dtype"] == "int8" and np.abs(out["keypoints"] - reference).max() * 48 < 3


def test_the_heatmap_head_trains_under_mixed_bfloat16_with_float32_maps():
    """The path a bf16 CPU takes (mixed_float16, a GPU's, is checked on one: benchmarks/gpu/): the maps and their
    decoding stay float32, the cross-entropy falls and the decoded points move towards the truth."""
    policy = "mixed_bfloat16"
    from convforge.tasks import get_task

    task = get_task("keypoints", {"name": "heatmap", "channels": 16})
    model = task.build_model("resnet18", (32, 32, 3), 5, SMALL, dtype=policy)
    assert model.output.dtype == "float32"
    model.compile(optimizer=keras.optimizers.Adam(0.003), **task.compile_args(model))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 32, 32, 3)).astype("float32")
    y = np.concatenate([rng.uniform(0.2, 0.8, (32, 5, 2)), np.full((32, 5, 1), 2.0)], -1).astype("float32")
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and history["point_error"][-1] < history["point_error"][0]
    decoded = task.inference_model(model)(x[:2])
    assert decoded["keypoints"].dtype == "float32" and np.isfinite(np.asarray(decoded["keypoints"])).all()


def test_the_export_judge_counts_a_rise_in_nme_as_a_drop():
    from convforge.export.judge import judge

    outputs = {"keypoints": np.zeros((2, 3, 2), "float32")}
    worse = judge(0.05, outputs, 0.04, outputs, "nme", 0.5, 2, higher_is_better=False)
    assert worse["drop_points"] == pytest.approx(1.0) and worse["status"] == "failed"
    better = judge(0.035, outputs, 0.04, outputs, "nme", 0.5, 2, higher_is_better=False)
    assert better["drop_points"] == pytest.approx(-0.5) and better["status"] == "passed"
