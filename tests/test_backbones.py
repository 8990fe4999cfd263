"""Architectures: exact published parameter counts, MACs, feature levels, options, serialization, errors."""
import numpy as np
import keras
import pytest

import convforge
from convforge.heads.classification import strip_aux
from convforge.registry import get_spec, list_models

REFERENCES = [(name, ref) for name in list_models() for ref in get_spec(name).references]


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


_COUNTED = {}


def _counts(name, ref):
    """(total, trainable, MACs) of `name` built as `ref` states; models two references share are built once
    (keras.applications and torchvision references of one model differ only in the convention counted)."""
    key = (name, tuple(ref.input_shape), ref.num_classes, repr(sorted(ref.options.items())))
    if key not in _COUNTED:
        model = convforge.build_backbone(name, input_shape=ref.input_shape, num_classes=ref.num_classes,
                                         **ref.options)
        _COUNTED[key] = (model.count_params(), _trainable(model), convforge.count_macs(model))
        del model
        keras.backend.clear_session()  # these are the big ones (up to 143M parameters): free them before the next
    return _COUNTED[key]


@pytest.mark.parametrize("name,ref", REFERENCES, ids=[f"{n}-{r.source.split()[0]}-{r.count}" for n, r in REFERENCES])
def test_param_count_equals_published(name, ref):
    """Every registered model has exactly the published parameter count in the convention it states."""
    total, trainable, macs = _counts(name, ref)
    got = trainable if ref.count == "trainable" else total
    assert got == ref.params, f"{name}: {got:,} != {ref.params:,} ({ref.source}, {ref.count})"
    spec = get_spec(name)
    if spec.macs and not ref.options and tuple(ref.input_shape) == tuple(spec.default_input_shape):
        # Published figures are rounded to 2-3 significant digits.
        assert macs == pytest.approx(spec.macs, rel=0.03), f"{name}: {macs:,} MACs vs published {spec.macs:,.0f}"


def test_every_model_has_a_reference():
    assert all(get_spec(n).references for n in list_models())


def test_list_models_patterns():
    assert convforge.list_models("resnext*") == ["resnext101_32x8d", "resnext50_32x4d"]
    assert "mobilenet_v2" in convforge.list_models()
    assert convforge.list_models("nothing*") == []
    assert len(convforge.list_models()) >= 28


@pytest.mark.parametrize("name,size,levels", [
    ("resnet18", 64, ["C1", "C2", "C3", "C4", "C5"]),
    ("vgg11", 64, ["C1", "C2", "C3", "C4", "C5"]),
    ("googlenet", 64, ["C1", "C2", "C3", "C4", "C5"]),
    ("inception_v3", 96, ["C1", "C2", "C3", "C4", "C5"]),
    ("densenet121", 64, ["C1", "C2", "C3", "C4", "C5"]),
    ("mobilenet_v2", 64, ["C1", "C2", "C3", "C4", "C5"]),
    ("alexnet", 96, ["C2", "C3", "C4", "C5"]),
    ("squeezenet1_1", 64, ["C1", "C2", "C3", "C4"]),
    ("lenet5", 32, ["C1", "C2"]),
    ("unet", 64, ["C0", "C1", "C2", "C3", "C4"]),
])
def test_feature_levels_are_named_with_their_strides(name, size, levels):
    """Any head can find C2..C5 by name; level k has stride 2**k."""
    model = convforge.build_backbone(name, input_shape=(size, size, 3), include_top=False)
    found = convforge.feature_levels(model)
    assert list(found) == levels
    assert convforge.level_strides(model) == {lv: 2 ** int(lv[1:]) for lv in levels}
    # A multi-level feature model for a detection/segmentation head is one line away.
    pyramid = keras.Model(model.input, [found[lv] for lv in levels[-3:]])
    outs = pyramid(np.zeros((1, size, size, 3), "float32"))
    assert len(outs) == min(3, len(levels)) and all(o.shape[0] == 1 for o in outs)


def test_include_top_false_and_pooling():
    feats = convforge.build_backbone("resnet18", input_shape=(64, 64, 3), include_top=False)
    assert feats.output.shape == (None, 2, 2, 512)
    pooled = convforge.build_backbone("resnet18", input_shape=(64, 64, 3), include_top=False, pooling="avg")
    assert pooled.output.shape == (None, 512)
    maxed = convforge.build_backbone("densenet121", input_shape=(64, 64, 3), include_top=False, pooling="max")
    assert maxed.output.shape == (None, 1024)


def test_se_is_an_option_of_any_resnet():
    plain = convforge.build_backbone("resnet18", input_shape=(32, 32, 3), num_classes=10)
    se = convforge.build_backbone("resnet18", input_shape=(32, 32, 3), num_classes=10, se_ratio=16)
    assert any(layer.name.endswith("_se_scale") for layer in se.layers)
    assert se.count_params() > plain.count_params()
    x = convforge.build_backbone("resnext50_32x4d", input_shape=(32, 32, 3), num_classes=10, se_ratio=16)
    assert any(layer.name.endswith("_se_scale") for layer in x.layers)


def test_googlenet_aux_classifiers_for_training_only():
    model = convforge.build_backbone("googlenet", input_shape=(64, 64, 3), num_classes=7, aux_logits=True)
    assert len(model.outputs) == 3 and all(o.shape == (None, 7) for o in model.outputs)
    inference = strip_aux(model)
    assert len(inference.outputs) == 1
    x = np.random.rand(2, 64, 64, 3).astype("float32")
    np.testing.assert_allclose(inference(x, training=False), model(x, training=False)[0], atol=1e-6)
    assert inference.count_params() < model.count_params()


def test_paper_googlenet_uses_5x5():
    model = convforge.build_backbone("googlenet", input_shape=(64, 64, 3), branch3_kernel=5)
    assert model.get_layer("inception3a_b2_1_conv").kernel.shape[:2] == (5, 5)


def test_mixed_precision_policy_keeps_the_head_in_float32():
    model = convforge.build_backbone("resnet18", input_shape=(32, 32, 3), num_classes=10, dtype="mixed_bfloat16")
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert model.get_layer("conv1_conv").variable_dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"
    out = model(np.random.rand(2, 32, 32, 3).astype("float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(np.sum(np.asarray(out), axis=1), 1.0, atol=1e-5)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


@pytest.mark.parametrize("name,size", [
    ("lenet5", 32), ("alexnet_original", 67), ("vgg11_bn", 32), ("googlenet", 32), ("inception_v3", 75),
    ("resnext50_32x4d", 32), ("se_resnet50", 32), ("densenet121", 32), ("squeezenet1_0", 32),
    ("mobilenet_v2", 32),
])
def test_save_and_load_keras_file(tmp_path, name, size):
    """Every family round-trips through get_config and a .keras file loaded in safe mode, with equal outputs."""
    channels = get_spec(name).default_input_shape[2]
    model = convforge.build_backbone(name, input_shape=(size, size, channels), num_classes=5)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    x = np.random.rand(2, size, size, channels).astype("float32")
    expected = np.asarray(model(x, training=False))
    clone = keras.Model.from_config(model.get_config())
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected, atol=1e-6)
    assert list(convforge.feature_levels(loaded)) == list(convforge.feature_levels(model))


def test_a_small_model_learns():
    """A few SGD steps on an easy two-class problem lower the loss: the blocks train end to end."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 32, 32, 3)).astype("float32")
    y = (x[:, :16].mean(axis=(1, 2, 3)) > x[:, 16:].mean(axis=(1, 2, 3))).astype("int32")
    x[y == 1, :16] += 0.5
    model = convforge.build_backbone("resnet18", input_shape=(32, 32, 3), num_classes=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] * 0.7, losses


class TestErrors:
    def test_unknown_name_suggests_close_matches(self):
        with pytest.raises(convforge.ModelError, match=r"unknown architecture 'resnet51'.*did you mean 'resnet50'"):
            convforge.build_backbone("resnet51")

    def test_input_too_small_names_the_minimum(self):
        with pytest.raises(convforge.ModelError, match=r"inception_v3: input 64x64 is too small.*at least 75x75"):
            convforge.build_backbone("inception_v3", input_shape=(64, 64, 3))

    @pytest.mark.parametrize("name", ["googlenet", "densenet121", "squeezenet1_0", "alexnet"])
    def test_registered_minimum_is_exact(self, name):
        spec = get_spec(name)
        convforge.build_backbone(name, input_shape=(spec.min_input_size,) * 2 + (3,), num_classes=3)
        keras.backend.clear_session()
        with pytest.raises(convforge.ModelError, match="too small"):
            convforge.build_backbone(name, input_shape=(spec.min_input_size - 1,) * 2 + (3,))

    def test_unknown_option(self):
        with pytest.raises(convforge.ModelError, match=r"resnet18 takes no option 'se_ration'.*se_ratio"):
            convforge.build_backbone("resnet18", se_ration=16)

    @pytest.mark.parametrize("kwargs,pattern", [
        (dict(input_shape=(64, 64)), "not \\(height, width, channels\\)"),
        (dict(pooling="mean", include_top=False), "pooling 'mean'"),
        (dict(dtype="mixed_float32"), "not a precision policy.*mixed_float16"),
        (dict(num_classes=0), "num_classes must be a positive integer"),
    ])
    def test_bad_arguments(self, kwargs, pattern):
        with pytest.raises(convforge.ModelError, match=pattern):
            convforge.build_backbone("resnet18", **kwargs)

    def test_unknown_task(self):
        with pytest.raises(convforge.ModelError, match="unknown task 'clasification'.*classification"):
            convforge.build_model("resnet18", task="clasification")
