"""Fast style transfer (Johnson, Alahi & Fei-Fei, ECCV 2016): a feed-forward network learns to paint any picture
in one style, trained against a fixed VGG loss network with the perceptual loss (content features of the input,
Gram matrices of the style image, total variation).

Recipe: `model.architecture` names the loss network (vgg16 or vgg19, ImageNet weights from `head.vgg_weights`, a
local keras.applications file); the trained network is heads.generators.resnet_generator (`head.widths`,
`head.residual_blocks`, `head.upsampling`). Data: any image source; the pictures are the content, there are no
labels, and the network reads and writes pixels on 0..1 (`data.normalize: unit`). Evaluation: the perceptual loss
on the val pictures (the headline, lower is better) and its three parts, beside the same parts of the unstyled
pictures (what the network started from).
"""
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from convforge.tasks import register_task
from convforge.tasks.base import Parser, Task

# Johnson et al.'s layers of VGG-16: style from relu1_2, relu2_2, relu3_3, relu4_3; content from relu3_3.
FAST_STYLE_LAYERS = {"vgg16": ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3"),
                     "vgg19": ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4")}
FAST_CONTENT_LAYERS = {"vgg16": ("block3_conv3",), "vgg19": ("block3_conv4",)}


class _LossNetworkOptions(BaseModel):
    """What every style head measures with: the VGG loss network, its weights, and the loss weights."""

    model_config = ConfigDict(extra="forbid")
    loss_network: Literal["vgg16", "vgg19"] = Field("vgg19", description="set from model.architecture")
    vgg_weights: Optional[str] = Field(None, description="a local keras.applications VGG weights file; null: "
                                                         "seeded random weights (textures, not the classic looks)")
    content_weight: float = Field(1.0, ge=0)
    style_weight: float = Field(10.0, ge=0)


class FastStyleOptions(_LossNetworkOptions):
    """The `head:` section of a fast style recipe."""

    name: Literal["fast"] = "fast"
    style_image: str = Field(..., description="the style picture: a file, or skimage:NAME for a scikit-image "
                                              "sample (skimage:immunohistochemistry, ...)")
    style_size: int = Field(256, ge=32, description="the style picture's longer side when its Grams are taken")
    tv_weight: float = Field(1.0, ge=0, description="total variation on the 0..1 scale")
    widths: tuple[int, int, int] = Field((32, 64, 128), description="the generator's three widths")
    residual_blocks: int = Field(5, ge=0)
    upsampling: Literal["nearest", "transpose"] = "nearest"

    @field_validator("widths")
    @classmethod
    def _positive(cls, value):
        if min(value) < 1:
            raise ValueError(f"{list(value)} is not accepted; accepted: three positive widths")
        return value


class AdaINOptions(_LossNetworkOptions):
    """The `head:` section of an arbitrary-style (AdaIN) recipe."""

    name: Literal["adain"] = "adain"
    style_images: list[str] = Field(
        ["skimage:immunohistochemistry", "skimage:hubble_deep_field", "skimage:colorwheel", "skimage:retina",
         "skimage:brick", "skimage:gravel"],
        min_length=1, description="the style pictures trained on (files or skimage:NAME); random crops of each")
    crops_per_style: int = Field(32, ge=1, description="random crops cut from each style picture")
    decoder_width: float = Field(0.25, gt=0, le=1, description="the decoder's widths as a share of the paper's "
                                                               "(256, 128, 64)")
    alpha: float = Field(1.0, ge=0, le=1, description="AdaIN's blend toward the content features (1: all style)")


HEADS = {"fast": FastStyleOptions, "adain": AdaINOptions}


def _no_target(example, context):
    """Style has no annotation: the picture itself is the target (Style.pair)."""
    import tensorflow as tf

    return tf.zeros([], tf.float32)


class Perception:
    """The loss network at one picture size with the style picture's Gram matrices: per-picture content, style
    and total-variation losses of stylized pictures against their content."""

    def __init__(self, options, input_shape):
        from convforge.style.features import FeatureExtractor, fit_size, gram, read_style_image

        network = options.loss_network
        self.style_layers, self.content_layers = FAST_STYLE_LAYERS[network], FAST_CONTENT_LAYERS[network]
        layers = tuple(dict.fromkeys(self.style_layers + self.content_layers))
        self.extractor = FeatureExtractor(layers, network, options.vgg_weights, tuple(input_shape[:2]) + (3,))
        style = fit_size(read_style_image(options.style_image), options.style_size) / 255.0
        style_extractor = FeatureExtractor(self.style_layers, network, options.vgg_weights, style.shape)
        self.grams = {name: gram(f) for name, f in style_extractor(style[None]).items()}
        self.weights = (options.content_weight, options.style_weight, options.tv_weight)

    def parts(self, content, stylized):
        """{"content_loss", "style_loss", "tv_loss", "perceptual_loss"} per picture (weighted)."""
        import tensorflow as tf

        from convforge.style.features import content_loss, style_loss, total_variation

        content, stylized = tf.cast(content, tf.float32), tf.cast(stylized, tf.float32)
        if content.shape[-1] == 1:
            content = tf.tile(content, [1, 1, 1, 3])
        targets = self.extractor(content)
        features = self.extractor(stylized)
        c, s, t = self.weights
        parts = {"content_loss": c * content_loss(features, targets, self.content_layers),
                 "style_loss": s * style_loss(features, self.grams, self.style_layers),
                 "tv_loss": t * total_variation(stylized)}
        parts["perceptual_loss"] = parts["content_loss"] + parts["style_loss"] + parts["tv_loss"]
        return parts


@register_task
class Style(Task):
    """Paint pictures in one style with a feed-forward network (the fast method; Gatys' optimization and its
    losses live in convforge.style)."""

    name = "style"
    headline_metric = "perceptual_loss"
    higher_is_better = False
    annotations = frozenset({"picture"})  # the picture itself is the target: no label-mixing augmentation
    architectures = ("vgg16", "vgg19")
    input_normalization = "unit"
    Options = FastStyleOptions
    parser = Parser(keeps_record=lambda r: True, keeps_example=lambda e: True, target=_no_target)

    @classmethod
    def options_class(cls, options):
        """The options class of the head a `head:` section names (fast by default)."""
        name = (options or {}).get("name", "fast") if isinstance(options, dict) else getattr(options, "name", "fast")
        if name not in HEADS:
            from convforge.errors import close_matches

            raise ValueError(f"head name {name!r} is not a style head{close_matches(str(name), HEADS)}; accepted: "
                             f"{', '.join(HEADS)}")
        return HEADS[name]

    @classmethod
    def head_defaults(cls, architecture):
        """The loss network is the recipe's architecture."""
        return {"loss_network": architecture}

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """The transformation network (heads.generators.resnet_generator) at the input's size."""
        from convforge.backbones.common import precision
        from convforge.errors import ModelError
        from convforge.heads.generators import resnet_generator

        height, width, channels = input_shape
        if height % 4 or width % 4 or channels != 3:
            raise ModelError(f"style input {tuple(input_shape)} is not accepted; accepted: RGB pictures whose "
                             f"height and width are multiples of 4 (two stride-2 stages)")
        o = self.options
        with precision(dtype):
            if o.name == "adain":
                from convforge.style.adain import build_adain

                if height % 8 or width % 8:
                    raise ModelError(f"adain input {tuple(input_shape)} is not accepted; accepted: height and width "
                                     f"multiples of 8 (the encoder's three pools)")
                return build_adain(input_shape, o.loss_network, o.vgg_weights, o.decoder_width, o.alpha,
                                   name=f"adain_{o.loss_network}")
            return resnet_generator(input_shape, o.widths, o.residual_blocks, o.upsampling,
                                    name=f"fast_style_{o.loss_network}")

    def pair(self, model, images, targets):
        """The picture is its own target: the loss compares the stylized picture with it. AdaIN also takes a style
        picture, a random crop of its style pool, carried in the target's last three channels for the loss."""
        if self.options.name != "adain":
            return images, images
        import tensorflow as tf

        with tf.init_scope():  # the pool is made once, eagerly, even when pair runs inside a dataset's map
            pool = tf.constant(self.style_pool(images.shape[1:3]))
        styles = tf.gather(pool, tf.random.uniform(tf.shape(images)[:1], 0, len(pool), tf.int32))
        return {"content": images, "style": styles}, tf.concat([images, styles], -1)

    def style_pool(self, size):
        """uint8-valued float32 (N, H, W, 3) crops on 0..1 of the AdaIN style pictures at the input's size (seeded)."""
        cache = self.__dict__.setdefault("_pool", {})
        key = tuple(int(v) for v in size)
        if key not in cache:
            from convforge.style.features import fit_size, read_style_image

            rng = np.random.default_rng(0)
            crops = []
            for spec in self.options.style_images:
                picture = fit_size(read_style_image(spec), 2 * max(key), shortest=max(key))
                for _ in range(self.options.crops_per_style):
                    top = rng.integers(0, picture.shape[0] - key[0] + 1)
                    left = rng.integers(0, picture.shape[1] - key[1] + 1)
                    crops.append(picture[top:top + key[0], left:left + key[1]])
            cache[key] = (np.round(np.stack(crops)) / 255.0).astype(np.float32)
        return cache[key]

    def perception(self, input_shape):
        """The loss network and the style's Grams for pictures of this size (built once per size)."""
        cache = self.__dict__.setdefault("_perception", {})
        key = tuple(int(v) for v in input_shape[:2])
        if key not in cache:
            cache[key] = Perception(self.options, key)
        return cache[key]

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """The perceptual loss: weighted content, style (Gram) and total-variation terms; AdaIN's: the decoded
        features against the AdaIN target, and the style's channel statistics."""
        if self.options.name == "adain":
            from convforge.style.adain import adain_losses

            o = self.options

            def adain_loss(pair, stylized):
                return adain_losses(model, pair[..., :3], pair[..., 3:], stylized, o.content_weight,
                                    o.style_weight)["perceptual_loss"]

            return dict(loss=adain_loss)
        perception = self.perception(model.inputs[0].shape[1:3])

        def perceptual_loss(content, stylized):
            return perception.parts(content, stylized)["perceptual_loss"]

        return dict(loss=perceptual_loss)

    @classmethod
    def recognizes(cls, model):
        """One picture in (or a content and a style picture), one picture of the same shape out."""
        if isinstance(model.input, dict):
            return set(model.input) == {"content", "style"}
        out = model.outputs[0]
        return len(model.outputs) == 1 and tuple(out.shape[1:3]) == tuple(model.inputs[0].shape[1:3]) and \
            out.shape[-1] == 3 and model.inputs[0].shape[-1] == 3

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """Mean perceptual loss of the stylized val pictures and its parts, and the unstyled pictures' parts."""
        sums, count = {}, 0
        for images, _ in dataset:
            images = np.asarray(images, np.float32)
            for prefix, parts in zip(("", "unstyled_"), self._measured(model, images, count)):
                for name, value in parts.items():
                    sums[prefix + name] = sums.get(prefix + name, 0.0) + float(np.sum(value))
            count += len(images)
        return {name: value / max(count, 1) for name, value in sums.items()}

    def _measured(self, model, images, offset):
        """(per-picture losses of the model's pictures, of the unstyled pictures) by the head's own measure; AdaIN
        takes the pool's style crops in turn from `offset`."""
        if self.options.name == "adain":
            from convforge.style.adain import adain_losses

            o = self.options
            pool = self.style_pool(images.shape[1:3])
            styles = pool[(np.arange(len(images)) + offset) % len(pool)]
            stylized = model({"content": images, "style": styles}, training=False)
            return [adain_losses(model, images, styles, out, o.content_weight, o.style_weight)
                    for out in (stylized, images)]
        stylized = model(images, training=False)
        stylized = np.asarray(stylized["stylized"] if isinstance(stylized, dict) else stylized, np.float32)
        perception = self.perception(images.shape[1:3])
        return [perception.parts(images, out) for out in (stylized, images)]

    def describe(self, outputs, class_names, top_k=3):
        """The stylized picture's mean colour."""
        picture = np.asarray(outputs, np.float32)
        return [{"class": "stylized", "probability": float(picture.mean())}]

    def draw(self, image, outputs, class_names, out_path):
        """Write the picture beside its stylized version."""
        from convforge.visualize import draw_beside

        return draw_beside(image, outputs, out_path)
