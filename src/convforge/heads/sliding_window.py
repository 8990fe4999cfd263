"""OverFeat's trick (Sermanet et al., ICLR 2014): a classifier's fully connected layers as convolutions.

A Dense layer that reads a flattened h x w x c map is the same computation as an h x w convolution with
`units` filters (valid padding), and a Dense after it is a 1x1 convolution. Rewritten that way, the classifier
takes a larger image and returns a map of class scores, one per window position, in a single pass instead of
one pass per crop: the shared convolutions are computed once.
"""
import keras
from keras import layers

from convforge.errors import ModelError

# Layers that turn a map into a vector and what they become on a map: (pooling over the training-size window).
_GLOBAL_POOLS = {layers.GlobalAveragePooling2D: layers.AveragePooling2D,
                 layers.GlobalMaxPooling2D: layers.MaxPooling2D}


def convolutionalize(model, input_shape):
    """Return the classifier `model` with its Flatten/Dense layers as equivalent convolutions, on `input_shape`.

    The first Dense after a Flatten becomes a kxk convolution (k: the flattened map's size at the training
    input), later Dense layers 1x1 convolutions, and a global pooling a pooling over the training-size window
    with stride 1. On the training size the output is the classifier's, shaped (B, 1, 1, K); on a larger image,
    position (i, j) is the classifier applied to the window its receptive field covers (exactly, for networks
    without padding, such as LeNet-5). The returned model shares the classifier's weights.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_run_through_graph") or len(model.inputs) != 1:
        raise ModelError(f"convolutionalize takes a functional Keras classifier with one image input; got "
                         f"{getattr(model, 'name', model)!r}")
    if len(model.outputs) != 1:
        model = keras.Model(model.input, model.outputs[0], name=model.name)  # auxiliary heads dropped
    replaced = {id(layer): _as_convolution(layer) for layer in model.layers}

    def swap(layer):
        """The layer itself (its weights shared), or its convolutional equivalent."""
        return replaced.get(id(layer)) or layer

    inputs = keras.Input(tuple(input_shape), name=model.input.name)
    try:
        outputs = model._run_through_graph(inputs, operation_fn=swap)
    except ValueError as err:
        raise ModelError(f"{model.name} cannot slide over input {tuple(input_shape)}: "
                         f"{str(err).splitlines()[0]}") from None
    return keras.Model(inputs, outputs, name=f"{model.name}_convolutional")


def _as_convolution(layer):
    """The convolutional equivalent of a vector layer (built, weights set), or None to keep the layer."""
    if isinstance(layer, layers.Flatten):
        return layers.Identity(name=f"{layer.name}_kept_map")
    for pool, window_pool in _GLOBAL_POOLS.items():
        if isinstance(layer, pool):
            if layer.keepdims:
                return None
            height, width = layer.input.shape[1:3]
            return window_pool(pool_size=(height, width), strides=1, name=f"{layer.name}_window")
    if isinstance(layer, layers.AdaptiveAveragePooling2D):
        raise ModelError(f"layer {layer.name!r} pools to a fixed grid whatever the input size, so the classifier "
                         f"cannot slide; accepted: a classifier whose top is Flatten/Dense or global pooling "
                         f"(e.g. alexnet_original, vgg, lenet5, resnet)")
    if isinstance(layer, layers.Reshape):
        raise ModelError(f"layer {layer.name!r} reshapes to a fixed size; accepted: a classifier whose top is "
                         f"Flatten/Dense or global pooling")
    if not isinstance(layer, layers.Dense) or len(layer.input.shape) != 2:
        return None
    source = _map_before(layer)
    kernel_size = tuple(source.shape[1:3]) if source is not None else (1, 1)
    weights = layer.get_weights()
    conv = layers.Conv2D(layer.units, kernel_size, activation=layer.activation, use_bias=layer.use_bias,
                         dtype=layer.dtype_policy, name=f"{layer.name}_conv")
    channels = weights[0].shape[0] // (kernel_size[0] * kernel_size[1])
    conv.build((None, *kernel_size, channels))
    # Flatten reads a channels-last map row by row, so the Dense kernel's rows are already (h, w, c) ordered.
    conv.set_weights([weights[0].reshape(*kernel_size, channels, layer.units), *weights[1:]])
    return conv


def _map_before(dense):
    """The 4-D map a Dense layer's input was flattened from (through dropouts), or None when it reads a vector
    that was not a Flatten's (a Dense or a global pooling)."""
    tensor = dense.input
    while True:
        producer = tensor._keras_history[0]
        if isinstance(producer, layers.Dropout):
            tensor = producer.input
            continue
        return producer.input if isinstance(producer, layers.Flatten) else None
