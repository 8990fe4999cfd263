"""convolutionalize: a classifier's Flatten/Dense top as convolutions gives its output on the training size and,
slid over a larger image, the classifier's output on every window."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

import convforge  # noqa: E402
from convforge.errors import ModelError  # noqa: E402


def test_lenet_slides_exactly_over_a_larger_image():
    """LeNet-5 pads nothing, so every output position equals the classifier on its 32x32 window (stride 4)."""
    keras.utils.set_random_seed(0)
    model = convforge.build_model("lenet5", num_classes=10, input_shape=(32, 32, 1))
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 40, 48, 1)).astype("float32")
    same = convforge.convolutionalize(model, (32, 32, 1))
    np.testing.assert_allclose(np.asarray(same(image[:, :32, :32]))[:, 0, 0],
                               np.asarray(model(image[:, :32, :32])), atol=1e-6)
    slid = convforge.convolutionalize(model, (40, 48, 1))
    scores = np.asarray(slid(image))
    assert scores.shape == (2, 3, 5, 10)
    for i in range(3):
        for j in range(5):
            crop = image[:, 4 * i:4 * i + 32, 4 * j:4 * j + 32]
            np.testing.assert_allclose(scores[:, i, j], np.asarray(model(crop)), atol=1e-5, err_msg=f"{i},{j}")
    # The sliding model shares the classifier's weights: no copy to keep in step.
    assert {id(w) for w in slid.weights} & {id(w) for w in model.weights}


@pytest.mark.parametrize("name, options, size, stride", [
    ("vgg11", dict(blocks=(1, 1, 1, 1, 1), widths=(8, 8, 8, 8, 8), fc_units=16), 64, 32),  # Flatten + 2 FC
    ("resnet18", dict(depths=(1, 1, 1, 1), widths=(8, 8, 8, 8)), 64, 32),  # global pooling + Dense
    ("squeezenet1_1", {}, 64, 16),  # already convolutional: its global pooling slides, at C4's stride
])
def test_other_tops_keep_their_output_on_the_training_size(name, options, size, stride):
    keras.utils.set_random_seed(1)
    model = convforge.build_model(name, num_classes=5, input_shape=(size, size, 3), **options)
    x = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    slid = convforge.convolutionalize(model, (size, size, 3))
    np.testing.assert_allclose(np.asarray(slid(x))[:, 0, 0], np.asarray(model(x)), atol=1e-5)
    bigger = convforge.convolutionalize(model, (size + 32, size + 64, 3))
    assert bigger.output.shape[1:3] == (1 + 32 // stride, 1 + 64 // stride) and bigger.output.shape[-1] == 5


def test_a_fixed_grid_pool_cannot_slide():
    model = convforge.build_model("alexnet", num_classes=3, input_shape=(96, 96, 3), fc_units=8)
    with pytest.raises(ModelError, match="pools to a fixed grid"):
        convforge.convolutionalize(model, (128, 128, 3))
