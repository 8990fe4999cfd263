"""Localization learns where the object is: a small instance beats the best constant box by a wide margin (the
first shapes recipe collapsed to the whole-image box for every image, val IoU 0.30), and the box head reads the
feature map's positions."""
import numpy as np

from convforge.heads.localization import box_iou
from convforge.tasks.localization import Localization


def _squares(n, size, rng):
    """Bright squares of random size and place on noise; the class is the quarter that holds the centre."""
    images = rng.uniform(0, 0.3, (n, size, size, 3)).astype("float32")
    boxes = np.zeros((n, 4), "float32")
    labels = np.zeros(n, "int32")
    for i in range(n):
        side = rng.integers(size // 5, size // 2)
        y, x = rng.integers(0, size - side, 2)
        images[i, y:y + side, x:x + side] = 1.0
        boxes[i] = np.array([y, x, y + side, x + side]) / size
        labels[i] = 2 * int(y + side / 2 >= size / 2) + int(x + side / 2 >= size / 2)
    return images, {"label": labels, "box": boxes}


def test_box_head_beats_the_best_constant_box():
    import keras

    rng = np.random.default_rng(0)
    train_x, train_y = _squares(1536, 32, rng)
    val_x, val_y = _squares(256, 32, rng)
    task = Localization()
    # resnet18's blocks at one per stage and narrow widths; the small-image stem leaves a 4x4 map at C5.
    model = task.build_model("resnet18", (32, 32, 3), 4, {"stem": "cifar", "depths": [1, 1, 1, 1],
                                                          "widths": [8, 16, 32, 64]})
    assert "box_flatten" in [layer.name for layer in model.layers]  # the regressor sees positions
    model.compile(optimizer=keras.optimizers.Adam(0.003), **task.compile_args(model))
    model.fit(train_x, train_y, batch_size=32, epochs=6, verbose=0)

    iou = float(np.mean(box_iou(val_y["box"], np.asarray(model.predict(val_x, verbose=0)["box"]))))
    # The best constant answer: the mean training box, scored on the val boxes.
    mean_box = np.broadcast_to(train_y["box"].mean(0), val_y["box"].shape)
    constant = float(np.mean(box_iou(val_y["box"], mean_box)))
    assert iou > constant + 0.25, (iou, constant)


def test_predict_draws_the_box(tmp_path):
    """`convforge predict --out` (or --draw) writes each image with the predicted box and class drawn on it."""
    import keras
    from PIL import Image

    from convforge.cli import main

    task = Localization()
    model = task.build_model("resnet18", (32, 32, 3), 4, {"stem": "cifar", "depths": [1, 1, 1, 1],
                                                          "widths": [8, 8, 8, 8]})
    model.save(tmp_path / "model.keras")
    image = np.zeros((48, 40, 3), "uint8")
    image[10:30, 8:24] = 255
    Image.fromarray(image).save(tmp_path / "square.png")
    out = tmp_path / "drawn" / "here"  # created
    # --draw: the flag's old name, kept working beside --out
    assert main(["predict", str(tmp_path / "model.keras"), str(tmp_path / "square.png"), "--draw", str(out)]) == 0
    drawn = np.asarray(Image.open(out / "square.png").convert("RGB"))
    assert drawn.shape[:2] == (48, 40)  # the image's own pixels, which the box is drawn in
    assert ((drawn[..., 0] == 255) & (drawn[..., 1] == 40)).any()  # the box outline
    (tmp_path / "file").write_text("not a folder")
    assert main(["predict", str(tmp_path / "model.keras"), str(tmp_path / "square.png"), "--out",
                 str(tmp_path / "file" / "sub")]) == 2
    keras.backend.clear_session()
