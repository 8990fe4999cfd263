"""3D shape from one image: .binvox files, the solids set (its grids agree with its pictures), voxel IoU, meshes
that enclose their voxels, and the voxel model trained, evaluated, drawn and exported."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import convforge  # noqa: E402
from convforge import data  # noqa: E402
from convforge.errors import DataError  # noqa: E402
from convforge.recipes import load_recipe  # noqa: E402

# A small shape3d recipe: 32 px solids with 16^3 grids, a few steps.
RECIPE = """
name: voxels_small
task: shape3d
head: {name: voxels, voxel_size: 16, latent: 32, channels: 16}
model: {architecture: resnet18, input_shape: [32, 32, 3], options: {depths: [1, 1, 1, 1], widths: [8, 16, 32, 32]}}
data:
  train: {source: solids, path: solids, n: 60, size: 32, seed: 0, voxels: 16}
  batch_size: 16
  normalize: imagenet
  augment: [{name: color_jitter}]
train: {epochs: 3, steps_per_epoch: 3, optimizer: {name: adamw, learning_rate: 0.005}}
"""


def _ball(size, radius=0.6):
    c = (np.arange(size) + 0.5) / size * 2 - 1
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    return x ** 2 + y ** 2 + z ** 2 <= radius ** 2


def test_binvox_files_are_written_and_read_in_the_formats_order(tmp_path):
    from convforge.data.sources.binvox import read_binvox, resample, write_binvox

    grid = np.zeros((2, 2, 2), bool)
    grid[1, 0, 0] = True  # x = 1, y = 0, z = 0: index x * 4 + z * 2 + y = 4 with y running fastest
    write_binvox(tmp_path / "one.binvox", grid)
    raw = (tmp_path / "one.binvox").read_bytes()
    assert raw.startswith(b"#binvox 1\ndim 2 2 2\n") and raw.endswith(b"data\n" + bytes([0, 4, 1, 1, 0, 3]))
    big = _ball(64)
    write_binvox(tmp_path / "ball.binvox", big)  # runs longer than 255 are split
    np.testing.assert_array_equal(read_binvox(tmp_path / "ball.binvox"), big)
    coarse = resample(big, 32)
    assert coarse.shape == (32, 32, 32) and coarse[16, 16, 16] and coarse.sum() >= big.sum() / 8
    (tmp_path / "bad.binvox").write_bytes(b"#binvox 1\ndim 2 2 2\ndata\n" + bytes([1, 3]))
    with pytest.raises(ValueError, match="runs cover 3 voxels, not 2x2x2 = 8"):
        read_binvox(tmp_path / "bad.binvox")


def test_the_solids_grids_agree_with_their_pictures(tmp_path):
    """The silhouette of each grid (seen down z) is the rendered object's, at the grid's resolution."""
    from convforge.data import solids

    for k, kind in enumerate(solids.KINDS):
        rng = np.random.default_rng([7, k])
        sdf = solids._placed(rng, kind, 0.8)
        hit, _ = solids._trace(sdf, 32)
        grid = solids.occupancy(sdf, 32)
        silhouette = grid.any(axis=2).T[::-1]  # (x, y) with y up -> image rows (down) and columns
        iou = (silhouette & hit).sum() / (silhouette | hit).sum()
        assert iou > 0.85, (kind, iou)
    splits = data.ensure_solids(tmp_path / "s", n=12, size=32, voxels=16)
    records = data.binvox(splits["train"])
    assert len(records) == 10 and set(records.class_names) <= set(solids.KINDS)
    again = data.ensure_solids(tmp_path / "s", n=12, size=32, voxels=16)  # reused, not redrawn
    assert again == splits
    grid = data.read_binvox(records[0]["voxels"])
    assert grid.shape == (16, 16, 16) and grid.any()
    with pytest.raises(DataError, match="voxels=7 is not accepted"):
        data.generate_solids(tmp_path / "t", n=4, voxels=7)


def test_voxel_iou_and_the_sweep_equal_their_definitions():
    from convforge.evaluate.voxels import threshold_sweep, voxel_iou

    truth = np.zeros((2, 4, 4, 4))
    truth[0, :2] = 1  # 32 voxels
    probabilities = np.zeros((2, 4, 4, 4))
    probabilities[0, :1] = 0.9  # 16 of them, sure
    probabilities[0, 3] = 0.3  # 16 wrong ones, unsure
    np.testing.assert_allclose(voxel_iou(probabilities, truth), [16 / 32, 1.0])  # both empty: 1
    sweep = threshold_sweep(probabilities, truth)
    assert sweep[0.5] == pytest.approx(0.75) and sweep[0.2] == pytest.approx((16 / 48 + 1) / 2)


def test_a_grids_mesh_is_closed_around_its_voxels(tmp_path):
    from convforge.mesh import grid_mesh, read_obj, winding_numbers, write_obj

    grid = _ball(16, 0.7)
    vertices, faces = grid_mesh(grid.astype("float32"))
    write_obj(tmp_path / "ball.obj", vertices, faces)
    v, f = read_obj(tmp_path / "ball.obj")
    assert len(f) == len(faces) and np.abs(v - vertices).max() < 1e-4
    c = (np.arange(16) + 0.5) / 16 * 2 - 1
    centres = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)
    inside = centres[grid][::7]
    outside = np.array([[0.95, 0.95, 0.95], [-0.95, 0.0, 0.0], [0.0, 0.9, -0.6]])
    assert np.all(winding_numbers(v, f, inside) > 0.99)
    assert np.all(np.abs(winding_numbers(v, f, outside)) < 0.01)
    assert grid_mesh(np.zeros((8, 8, 8), "float32"))[1].shape == (0, 3)


def test_the_voxel_recipe_trains_evaluates_draws_and_exports(tmp_path, monkeypatch):
    """The loss falls; evaluation writes voxel IoU and its sweep; predict writes a mesh that encloses the predicted
    voxels; TFLite and ONNX give Keras' occupancy."""
    from convforge import preprocessing
    from convforge.cli import main as cli_main
    from convforge.mesh import read_obj, winding_numbers

    monkeypatch.chdir(tmp_path)
    (tmp_path / "voxels.yaml").write_text(RECIPE)
    result = convforge.train(load_recipe(tmp_path / "voxels.yaml"), printer=lambda *_: None, verbose=0)
    run = Path(result["run_dir"])
    history = list(csv.DictReader(open(run / "history.csv")))
    assert float(history[-1]["loss"]) < float(history[0]["loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val_voxel_iou", "val_voxel_iou_sweep", "val_best_threshold"} <= set(metrics)
    assert set(metrics["val_voxel_iou_sweep"]) == {f"{t / 10:.1f}" for t in range(1, 10)}

    image = sorted((tmp_path / "solids" / "val").rglob("*.png"))[0]
    assert cli_main(["predict", str(run / "model.keras"), str(image), "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / f"{image.stem}.png").exists()
    # predict normalizes as training did; the mesh it wrote must enclose the voxels the model predicts.
    model = convforge.tasks.load_model(run / "model.keras")
    spec, _ = preprocessing.saved_beside(run / "model.keras", (32, 32, 3))
    occupancy = np.asarray(model(preprocessing.preprocess(preprocessing.read_image(str(image), 3)[None],
                                                          spec))["occupancy"])[0]
    vertices, faces = read_obj(tmp_path / "drawn" / f"{image.stem}.obj")
    if (occupancy > 0.5).any():
        c = (np.arange(16) + 0.5) / 16 * 2 - 1
        centres = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)[occupancy > 0.5][:50]
        assert np.all(winding_numbers(vertices, faces, centres) > 0.5)

    images = np.stack([np.asarray(keras.utils.load_img(p), "float32") / 255.0
                       for p in sorted((tmp_path / "solids" / "val").rglob("*.png"))[:4]])
    exported = convforge.export(model, tmp_path / "export", formats=["tflite", "onnx"], inputs_for_check=images,
                                progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry


def test_the_subvoxel_layer_is_a_kernel_2_transposed_3d_conv():
    from convforge.heads.voxels import SubvoxelConvTranspose3D

    x = np.random.default_rng(0).normal(size=(2, 3, 3, 3, 5)).astype("float32")
    reference = keras.layers.Conv3DTranspose(4, 2, strides=2)
    ours = SubvoxelConvTranspose3D(4)
    reference(x), ours(x)
    ours.set_weights(reference.get_weights())
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(reference(x)), atol=1e-5)
    # convmath counts it as the transposed conv it is: 27 voxels x 5 channels x 8 taps x 4 filters.
    from convforge import convmath

    inputs = keras.Input((3, 3, 3, 5))
    for layer in (keras.layers.Conv3DTranspose(4, 2, strides=2), SubvoxelConvTranspose3D(4)):
        assert convmath.count_macs(keras.Model(inputs, layer(inputs))) == 27 * 5 * 8 * 4


@pytest.mark.parametrize("upsampling, policy", [("subvoxel", "mixed_bfloat16"), ("conv_transpose", "mixed_bfloat16"),
                                               ("subvoxel", "mixed_float16")])
def test_the_voxel_model_learns_a_grid_under_mixed_precision(upsampling, policy):
    """The paths a bf16 CPU (both decoders) and a GPU take: the weighted cross-entropy falls and the voxel IoU of
    the training grids rises; the logits stay float32."""
    from convforge.tasks import get_task

    task = get_task("shape3d", {"voxel_size": 8, "latent": 16, "channels": 16, "upsampling": upsampling})
    model = task.build_model("resnet18", (32, 32, 3), 1, {"depths": [1, 1, 1, 1], "widths": [8, 8, 16, 16]},
                             dtype=policy)
    assert model.output.dtype == "float32"
    model.compile(optimizer=keras.optimizers.Adam(0.01), **task.compile_args(model))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 32, 32, 3)).astype("float32")
    y = np.repeat(_ball(8, 0.7)[None], 16, 0).astype("float32")
    history = model.fit(x, y, epochs=6, batch_size=8, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and history["voxel_iou"][-1] > history["voxel_iou"][0]


def test_full_int8_holds_the_subvoxel_decoder_and_names_what_it_leaves_in_float(tmp_path):
    """TFLite has no int8 kernel for CONV_3D_TRANSPOSE: the conv_transpose decoder's int8 file keeps it in float32
    (and its card says so), while the subvoxel decoder (matmuls and transposes) quantizes whole."""
    from convforge.tasks import get_task

    x = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")
    for upsampling, left in (("subvoxel", []), ("conv_transpose", ["CONV_3D_TRANSPOSE"])):
        task = get_task("shape3d", {"voxel_size": 8, "latent": 16, "channels": 16, "upsampling": upsampling})
        model = task.inference_model(task.build_model("resnet18", (32, 32, 3), 1, {"depths": [1, 1, 1, 1],
                                                                                   "widths": [8, 8, 16, 16]}))
        result = convforge.export(model, tmp_path / upsampling, formats=["tflite_int8"], representative=x,
                                  inputs_for_check=x, progress=None, latency_runs=0)
        entry = result["card"]["artifacts"][0]
        assert entry["float_ops"] == left and entry["check"]["max_abs_diff"] < 0.05, entry
