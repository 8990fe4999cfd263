"""Classification tops: what turns a backbone's last feature level into class scores.

Three kinds cover the registered architectures, named by the registry's `top` column:
- "gap": global average pooling, optional dropout, one Dense (ResNet, DenseNet, Inception, MobileNet);
- "fc": flatten, hidden Dense layers with dropout, the classifier (LeNet, AlexNet, VGG);
- "conv": SqueezeNet's dropout, 1x1 conv to the classes with ReLU, then global average pooling.
GoogLeNet's auxiliary classifiers (Szegedy et al. 2015, section 5) attach to named layers inside the backbone.
The classifier computes in float32 under a mixed policy, so softmax and the loss stay accurate.
"""
import keras
from keras import layers

from convforge.layers import conv_bn_act


def head_dtype():
    """Compute the last layer in float32 under a mixed policy, so softmax and the loss stay accurate."""
    return "float32" if keras.config.dtype_policy().name.startswith("mixed") else None


def classifier(x, num_classes, activation, *, name="predictions"):
    """The final Dense layer (float32 under mixed precision)."""
    return layers.Dense(num_classes, activation=activation, dtype=head_dtype(), name=name)(x)


def gap_top(x, num_classes, classifier_activation="softmax", dropout=0.0):
    """The modern top: global average pooling, dropout when > 0, a Dense classifier."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="top_dropout")(x)
    return classifier(x, num_classes, classifier_activation)


def fc_top(x, num_classes, classifier_activation="softmax", fc_units=(4096, 4096), fc_activation="relu",
           dropout=0.5, dropout_first=False, adaptive_pool=None):
    """Flatten, hidden Dense layers `fc_units` (an int: two of that width), the classifier.

    dropout_first puts each dropout before its Dense (AlexNet as torchvision has it) instead of after (VGG).
    adaptive_pool pools the map to a fixed grid first (torchvision's AlexNet), so the top fits any input size.
    """
    units = (fc_units, fc_units) if isinstance(fc_units, int) else tuple(fc_units)
    if adaptive_pool:
        x = layers.AdaptiveAveragePooling2D(tuple(adaptive_pool), name="adaptive_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, width in enumerate(units, start=1):
        if dropout and dropout_first:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
        x = layers.Dense(width, activation=fc_activation, name=f"fc{i}")(x)
        if dropout and not dropout_first:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return classifier(x, num_classes, classifier_activation)


def conv_top(x, num_classes, classifier_activation="softmax", dropout=0.5):
    """SqueezeNet's top: dropout, a 1x1 conv to num_classes with ReLU, global average pooling."""
    x = layers.Dropout(dropout, name="top_dropout")(x)
    dtype = head_dtype()
    x = layers.Conv2D(num_classes, 1, activation="relu", dtype=dtype, name="classifier_conv")(x)
    x = layers.GlobalAveragePooling2D(dtype=dtype, name="avg_pool")(x)
    return layers.Activation(classifier_activation, dtype=dtype, name="predictions")(x)


TOPS = {"gap": gap_top, "fc": fc_top, "conv": conv_top}


def aux_classifier(x, num_classes, activation, name):
    """GoogLeNet's auxiliary head: pool to 4x4, 1x1 conv 128, FC 1024, dropout 0.7, classifier."""
    x = layers.AdaptiveAveragePooling2D((4, 4), name=f"{name}_pool")(x)
    x = conv_bn_act(x, 128, 1, name=f"{name}_conv", bn_epsilon=1e-3)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc1")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return classifier(x, num_classes, activation, name=f"{name}_predictions")


def classification_model(backbone, top, num_classes, aux_taps=(), aux_logits=False, name=None, **options):
    """Put the classification top `top` (a key of TOPS) on a backbone model's output.

    With aux_logits, an auxiliary classifier reads each layer named in aux_taps and the model returns
    [main, aux1, ...]; the auxiliary heads exist for training (`strip_aux` removes them).
    """
    activation = options.get("classifier_activation", "softmax")
    aux = [aux_classifier(backbone.get_layer(tap).output, num_classes, activation, name=f"aux{i}")
           for i, tap in enumerate(aux_taps if aux_logits else (), start=1)]
    main = TOPS[top](backbone.output, num_classes, **options)
    return keras.Model(backbone.input, [main, *aux] if aux else main, name=name or backbone.name)


def strip_aux(model):
    """Return the inference model of a classifier built with auxiliary heads: the main output only, same weights."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, model.outputs[0], name=model.name)
