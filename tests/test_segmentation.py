"""Semantic segmentation: every decoder and upsampling mode gives the input size (odd sizes too), the losses give
hand-computed values, mean IoU equals scikit-learn's from the same pixels, a recipe trains (loss falls) with the
class map built from the shapes' polygons, and the model exports to TFLite and ONNX with Keras' numbers."""
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import convforge  # noqa: E402
from convforge.errors import ModelError  # noqa: E402
from convforge.heads.segmentation import PixelLoss, bilinear_kernel, confusion_matrix, iou_from_confusion  # noqa: E402
from convforge.recipes import load_recipe  # noqa: E402
from convforge.tasks import get_task  # noqa: E402
from runchecks import check_finished_run, history_rows  # noqa: E402
from smallmodels import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UNET = ROOT / "recipes" / "segmentation" / "unet_vgg11_shapes.yaml"
VGG = {"blocks": [1, 1, 1, 1, 1], "widths": [4, 8, 8, 8, 8]}


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "unet"])
@pytest.mark.parametrize("mode", ["unpool", "transpose", "bilinear"])
def test_every_decoder_and_upsampling_gives_the_input_size_odd_sizes_too(name, mode):
    task = get_task("segmentation", {"name": name, "upsampling": mode, "channels": 4})
    model = task.build_model("vgg11_bn", (67, 61, 3), 5, VGG)
    out = model(np.zeros((1, 67, 61, 3), "float32"))
    assert out.shape == (1, 67, 61, 5) and out.dtype == "float32"
    np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, atol=1e-5)
    assert get_task("segmentation").recognizes(model)


@pytest.mark.parametrize("mode", ["unpool", "transpose", "bilinear"])
def test_unet_on_its_own_encoder_concatenates_every_level_full_resolution_included(mode):
    """The paper's UNet: its own plain encoder (two convs a level, four pools) and skips from every level, the
    full-resolution C0 too, so nothing is upsampled past the last skip."""
    task = get_task("segmentation", {"name": "unet", "upsampling": mode, "channels": 4})
    model = task.build_model("unet", (67, 61, 3), 3, {"widths": [4, 8, 8, 16, 16]})
    assert model.output.shape == (None, 67, 61, 3)
    skips = sorted(layer.name for layer in model.layers if layer.name.startswith("skip_"))
    assert skips == ["skip_C0", "skip_C1", "skip_C2", "skip_C3"]
    assert not any(layer.name.startswith("up_image") for layer in model.layers)
    assert model.get_layer("skip_C0").output.shape[1:3] == (67, 61)


@pytest.mark.parametrize("mode", ["transpose", "bilinear"])
def test_the_dilated_decoder_on_a_dilated_resnet_gives_the_input_size(mode):
    task = get_task("segmentation", {"name": "dilated", "upsampling": mode, "channels": 8})
    options = {"depths": [1, 1, 1, 1], "widths": [8, 8, 16, 16], "output_stride": 8}
    model = task.build_model("resnet18", (67, 61, 3), 5, options)
    assert model.output.shape == (None, 67, 61, 5)
    assert model.get_layer("C5").output.shape[1:3] == (9, 8)  # ceil(67 / 8), ceil(61 / 8): stride 8, not 32


def test_a_dilated_resnet_keeps_its_receptive_field_at_a_smaller_stride():
    """Dilation replaces the last strides: the receptive field tables (convmath) see the same field size with
    jump 8 or 16, as the registry's level table says, and the same weights."""
    from convforge.backbones import build_backbone
    from convforge.convmath import receptive_fields
    from convforge.registry import get_spec

    small = {"depths": [1, 1, 1, 1], "widths": [8, 8, 16, 16]}
    plain = receptive_fields(build_backbone("resnet18", (64, 64, 3), include_top=False, **small))["C5"]
    for output_stride in (8, 16):
        model = build_backbone("resnet18", (64, 64, 3), include_top=False, output_stride=output_stride, **small)
        field = receptive_fields(model)["C5"]
        assert field.jump[0] == output_stride == get_spec("resnet18").feature_levels(
            {"output_stride": output_stride})["C5"]
        assert field.size == plain.size
        assert model.count_params() == build_backbone("resnet18", (64, 64, 3), include_top=False,
                                                       **small).count_params()


def test_the_public_build_model_takes_the_decoder_and_upsampling():
    model = convforge.build_model("vgg11_bn", task="segmentation", head="fcn8s", num_classes=5, input_shape=(64, 64, 3),
                                  upsampling="bilinear", **VGG)
    assert model.output.shape == (None, 64, 64, 5) and model.get_layer("up_image_resize") is not None


def test_unpool_needs_max_pool_switches_and_says_which_backbones_have_them():
    task = get_task("segmentation", {"name": "unet", "upsampling": "unpool"})
    with pytest.raises(ModelError, match="upsampling 'unpool' needs a 2x2 max-pool .* accepted: a backbone that "
                                         "downsamples by max-pools"):
        task.build_model("resnet18", (64, 64, 3), 5, {"depths": [1, 1, 1, 1], "widths": [8, 8, 8, 8]})


def test_transposed_convolution_starts_as_bilinear_upsampling():
    # FCN's initializer: upsampling a constant map by 2 keeps it constant away from the border.
    assert bilinear_kernel(4).tolist()[1] == pytest.approx([0.1875, 0.5625, 0.5625, 0.1875])
    from convforge.heads.segmentation import upsample

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, upsample(inputs, 2, "transpose", "up"))
    out = np.asarray(model(np.ones((1, 8, 8, 3), "float32")))
    np.testing.assert_allclose(out[0, 2:-2, 2:-2], 1.0, atol=1e-6)


def test_pixel_losses_match_hand_computed_values():
    probabilities = np.array([[[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], [[0.2, 0.2, 0.6], [0.5, 0.25, 0.25]]]],
                             "float32")  # (1, 2, 2, 3)
    labels = np.array([[[0, 1], [2, 255]]], "uint8")  # the last pixel is ignored
    ce = -(np.log(0.7) + np.log(0.8) + np.log(0.6)) / 3
    assert float(PixelLoss(3)(labels, probabilities)) == pytest.approx(ce, rel=1e-5)
    weighted = -(1 * np.log(0.7) + 2 * np.log(0.8) + 3 * np.log(0.6)) / 3
    assert float(PixelLoss(3, class_weights=[1, 2, 3])(labels, probabilities)) == pytest.approx(weighted, rel=1e-5)
    focal = -((0.3 ** 2) * np.log(0.7) + (0.2 ** 2) * np.log(0.8) + (0.4 ** 2) * np.log(0.6)) / 3
    assert float(PixelLoss(3, focal_gamma=2)(labels, probabilities)) == pytest.approx(focal, rel=1e-5)
    # Dice per class over the three labelled pixels: overlap p[y], totals (1 + sum of that class's p).
    dice = np.mean([(2 * 0.7 + 1) / (1 + 0.7 + 0.1 + 0.2 + 1), (2 * 0.8 + 1) / (1 + 0.2 + 0.8 + 0.2 + 1),
                    (2 * 0.6 + 1) / (1 + 0.1 + 0.1 + 0.6 + 1)])
    got = float(PixelLoss(3, dice_weight=0.5)(labels, probabilities))
    assert got == pytest.approx(ce + 0.5 * (1 - dice), rel=1e-5)


def test_mean_iou_equals_scikit_learn_on_the_same_pixels():
    from sklearn.metrics import confusion_matrix as sk_confusion, jaccard_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(3, 16, 16)).astype("uint8")
    labels[0, :2] = 255
    predicted = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, 4, labels.shape)) % 4
    matrix = confusion_matrix(labels, predicted, 4)
    keep = labels.reshape(-1) != 255
    want = sk_confusion(labels.reshape(-1)[keep], predicted.reshape(-1)[keep], labels=range(4))
    np.testing.assert_array_equal(matrix, want)
    iou, mean, accuracy = iou_from_confusion(matrix)
    np.testing.assert_allclose(iou, jaccard_score(labels.reshape(-1)[keep], predicted.reshape(-1)[keep],
                                                  average=None, labels=range(4)))
    assert mean == pytest.approx(iou.mean()) and accuracy == pytest.approx(np.trace(want) / want.sum())
    # A class neither labelled nor predicted stays out of the mean.
    assert np.isnan(iou_from_confusion(confusion_matrix([0, 1], [0, 1], 3))[0][2])


def test_a_recipe_trains_with_class_maps_from_polygons_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = tiny(UNET, shapes_dir=tmp_path / "shapes", epochs=3, steps=4) + [
        "model.options={blocks: [1,1,1,1,1], widths: [8,8,16,16,16]}", "train.optimizer.learning_rate=0.01"]
    recipe = load_recipe(UNET, overrides=sets)
    result = convforge.train(recipe, printer=lambda *_: None, verbose=0)
    run = Path(result["run_dir"])
    check_finished_run(run, recipe, epochs=3)  # test_train.py leaves this recipe to this test
    losses = [float(r["loss"]) for r in history_rows(run)]
    assert losses[-1] < losses[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["val_mean_iou"] <= 1 and 0 <= metrics["val_pixel_accuracy"] <= 1
    names = json.loads((run / "class_names.json").read_text())
    assert names == ["background", "circle", "rectangle", "triangle", "star"]
    assert set(metrics["val_iou_per_class"]) == set(names)

    # The class maps: background where no shape is, and each shape's class + 1 inside its polygon.
    from convforge.train.datasets import val_data

    recipe = load_recipe(UNET, overrides=sets)
    images, labels = next(iter(val_data(recipe)[0]))
    labels = np.asarray(labels)
    assert labels.dtype == np.uint8 and labels.shape[1:] == tuple(recipe.model.input_shape[:2])
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4} and (labels == 0).mean() > 0.2 and (labels > 0).any()

    # A fresh process reads the model back (the decoder's initializer and layers register with convforge's heads),
    # an unpooling UNet's too.
    import subprocess
    import sys

    unpool = get_task("segmentation", {"name": "unet", "upsampling": "unpool", "channels": 4}).build_model(
        "vgg11_bn", (32, 32, 3), 5, VGG)
    unpool.save(tmp_path / "unpool.keras")
    for path in (run / "model.keras", tmp_path / "unpool.keras"):
        loaded = subprocess.run([sys.executable, "-c", "import sys; from convforge.modelfile import load_model; "
                                 "print(load_model(sys.argv[1]).output.shape)", str(path)],
                                capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 0 and ", 5)" in loaded.stdout, loaded.stderr[-2000:]

    # `convforge evaluate --out` writes the same numbers under the task's own names; `predict --out` draws.
    from convforge.cli import main as cli_main
    from convforge.runs import evaluate

    evaluate(run, out=tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["mean_iou"] == pytest.approx(metrics["val_mean_iou"])
    assert set(written["iou_per_class"]) == set(names) and 0 <= written["pixel_accuracy"] <= 1
    image = sorted((tmp_path / "shapes").rglob("*.png"))[0]
    assert cli_main(["predict", str(run / "model.keras"), str(image), "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / f"{image.stem}.png").exists()

    model = convforge.tasks.load_model(run / "model.keras")
    exported = convforge.export(model, tmp_path / "export", formats=["tflite", "onnx"],
                                inputs_for_check=np.asarray(images[:4]), progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_and_its_float32_copy_exports_to_int8(policy, tmp_path):
    """The paths a bf16 CPU or a GPU takes, and full int8: float32 probabilities, a falling loss, and the float32
    copy's TFLite fp32 equal to Keras and int8 running in LiteRT with the same output shape."""
    task = get_task("segmentation", {"name": "fcn8s", "upsampling": "bilinear"})
    model = task.build_model("vgg11_bn", (32, 32, 3), 3, VGG, dtype=policy)
    assert model.output.dtype == "float32" and any(la.compute_dtype == policy[6:] for la in model.layers)
    model.compile(optimizer=keras.optimizers.Adam(0.01), **task.compile_args(model))
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    y = (x[..., 0] > 0).astype("uint8") + (x[..., 1] > 1).astype("uint8")
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
    assert 0 <= history["mean_iou"][-1] <= 1
    result = convforge.export(model, tmp_path / policy, formats=["tflite", "tflite_int8"], representative=x,
                              progress=None, latency_runs=0)
    checks = {a["format"]: a["check"] for a in result["card"]["artifacts"]}
    assert result["card"]["precision"]["trained"] == policy and checks["tflite"]["status"] == "passed"
    assert checks["tflite_int8"]["output_shapes"] == {"probabilities": [32, 32, 3]}
