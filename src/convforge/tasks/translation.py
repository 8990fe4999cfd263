"""Unpaired image-to-image translation (CycleGAN, Zhu et al., ICCV 2017): learn to move pictures of domain A into
domain B's look and back, from two sets of pictures that show different scenes.

Recipe: `data.domain_a` (or `train`) and `data.domain_b` name any two image sources; no model.architecture (the
networks come from `head:`: the generator, heads.generators' ResNet-block or U-Net, and the PatchGAN
discriminator, heads.discriminators); pixels on 0..1 (`data.normalize: unit`). Training is train.cyclegan's: both
generators and both discriminators, each loss logged per epoch, a sample grid written every epoch. The run's
model.keras is the A -> B generator, model_b2a.keras the B -> A one.

Evaluation scores A -> B on the val pictures of A. With `data.paired_val` (the same scenes drawn in domain B, one
for one: the shapes set renders any seed flat or textured) it measures PSNR and SSIM against that ground truth,
beside the identity baseline (the untranslated picture against it); SSIM, a fraction, is the headline exports are
judged by. With `head.judge` (a classifier trained on domain B: a run folder or .keras) it reports that
classifier's accuracy on the translations (pix2pix's "FCN score"), on the untranslated pictures and on the ground
truth, for pictures that hold one labelled object.
"""
from typing import Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from convforge.tasks import register_task
from convforge.tasks.base import Parser, Task


RESNET_ONLY = frozenset({"residual_blocks", "upsampling"})


class GeneratorOptions(BaseModel):
    """Both generators' design (they share it)."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["resnet", "unet"] = Field("resnet", description="resnet: Johnson et al.'s residual network "
                                                                  "(CycleGAN's); unet: pix2pix's U-Net")
    widths: Optional[list[int]] = Field(None, description="resnet: three widths (default [32, 64, 128]); unet: one "
                                                          "per level (default [32, 64, 128, 256])")
    residual_blocks: int = Field(6, ge=0, description="resnet: blocks at a quarter of the resolution (CycleGAN: 6 "
                                                      "at 128 px, 9 at 256 px)")
    upsampling: Literal["nearest", "transpose"] = Field("nearest", description="resnet: nearest + conv, or "
                                                                               "transposed convs")
    edge_kernel: int = Field(7, ge=1, description="the full-resolution convs' size (resnet: the first and last, "
                                                  "CycleGAN's 7, Johnson's 9; unet: the full-resolution skip's)")
    padding: Literal["zeros", "reflect"] = Field("reflect", description="the stride-1 convs' border, mirrored "
                                                                       "(CycleGAN's) or zeros")
    full_resolution_skip: bool = Field(False, description="the last conv also reads features computed at the full "
                                                          "resolution (detail finer than the resnet's quarter- "
                                                          "or the unet's half-resolution levels)")
    input_skip: bool = Field(False, description="predict a change to the input picture (the network starts as the "
                                                "identity) instead of a new picture")
    picture_context: bool = Field(False, description="the last convs also see the picture itself and its mean "
                                                     "colour, which instance normalization hides from every "
                                                     "other layer")

    @field_validator("widths")
    @classmethod
    def _positive(cls, value):
        if value is not None and (not value or min(value) < 1):
            raise ValueError(f"{value} is not accepted; accepted: positive widths")
        return value

    @model_validator(mode="after")
    def _resnet_fields_only_for_resnet(self):
        # Against the defaults, not the fields given: a run's saved recipe.yaml writes every field out.
        given = sorted(k for k in RESNET_ONLY if getattr(self, k) != type(self).model_fields[k].default)
        if self.name == "unet" and given:
            raise ValueError(f"{', '.join(given)} is a resnet generator option; the unet generator takes: widths, "
                             f"edge_kernel, padding, full_resolution_skip, input_skip, picture_context")
        return self


class DiscriminatorOptions(BaseModel):
    """Both PatchGAN discriminators' design."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["patchgan"] = "patchgan"
    filters: int = Field(64, ge=1, description="the first layer's width (doubling per stride-2 layer, up to 8x)")
    downsamplings: int = Field(3, ge=1, le=6, description="stride-2 layers: 3 gives CycleGAN's 70x70-pixel "
                                                          "patches (`convforge summary RECIPE` prints the field)")
    norm: Literal["instance", "batch", "none"] = Field("instance", description="CycleGAN's instance "
                                                                               "normalization, pix2pix's batch, "
                                                                               "or none")


class TranslationOptions(BaseModel):
    """The `head:` section of a translation recipe."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["cyclegan"] = "cyclegan"
    generator: GeneratorOptions = Field(default_factory=GeneratorOptions)
    discriminator: DiscriminatorOptions = Field(default_factory=DiscriminatorOptions)
    gan_loss: Literal["least_squares", "non_saturating"] = "least_squares"
    cycle_weight: Union[float, tuple[float, float]] = Field(
        10.0, description="the round trips' L1 weight (CycleGAN's lambda), or [A -> B -> A, B -> A -> B] (lambda_A, "
                          "lambda_B): lower for a round trip that must restore what the translation drops")
    identity_weight: float = Field(0.5, ge=0, description="the identity loss, as a share of each domain's cycle "
                                                          "weight")
    pool_size: int = Field(50, ge=0, description="generated pictures the discriminators' history keeps (0: none)")
    discriminator_lr_ratio: float = Field(1.0, gt=0, description="the discriminators' learning rate as a multiple "
                                                                 "of train.optimizer's (TTUR: > 1 learns faster)")
    r1_weight: float = Field(0.0, ge=0, description="R1 gradient penalty on the discriminators (Mescheder et al. "
                                                    "2018's gamma: gamma/2 x |slope at real pictures|^2; 0: none)")

    @field_validator("cycle_weight")
    @classmethod
    def _non_negative(cls, value):
        if min(value if isinstance(value, tuple) else (value,)) < 0:
            raise ValueError(f"{value} is not accepted; accepted: weights >= 0")
        return value

    judge: Optional[str] = Field(None, description="a classifier trained on domain B (run folder or .keras): "
                                                   "evaluation reports its accuracy on the translations")


def _label(example, context):
    """The class of a picture that holds exactly one labelled object, else -1 (translation needs no label; the
    judge classifier scores the ones that have it)."""
    import tensorflow as tf

    classes = example["classes"]
    return tf.cond(tf.shape(classes)[0] == 1, lambda: tf.cast(classes[0], tf.int32), lambda: tf.constant(-1))


@register_task
class Translation(Task):
    """CycleGAN: two generators (A -> B, B -> A) and two PatchGAN discriminators learned from unpaired pictures."""

    name = "translation"
    headline_metric = "ssim"
    higher_is_better = True
    annotations = frozenset({"picture"})
    architectures = ()
    input_normalization = "unit"
    domains = 2
    Options = TranslationOptions
    parser = Parser(keeps_record=lambda r: True, keeps_example=lambda e: True, target=_label)

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """The train.cyclegan.CycleGAN of both generators and both discriminators at the input's size."""
        from convforge.backbones.common import precision
        from convforge.errors import ModelError
        from convforge.heads.discriminators import patchgan
        from convforge.heads.generators import resnet_generator, unet_generator
        from convforge.train.cyclegan import CycleGAN

        o = self.options
        g = o.generator
        height, width, channels = (int(v) for v in input_shape)
        multiple = 4 if g.name == "resnet" else 2 ** len(g.widths or (0,) * 4)
        if height % multiple or width % multiple or channels != 3:
            raise ModelError(f"translation input {tuple(input_shape)} is not accepted by the {g.name} generator; "
                             f"accepted: RGB pictures whose height and width are multiples of {multiple}")

        def generator(name):
            if g.name == "resnet":
                widths = tuple(g.widths or (32, 64, 128))
                if len(widths) != 3:
                    raise ModelError(f"head.generator.widths {list(widths)} is not accepted; accepted: three "
                                     f"widths for the resnet generator")
                return resnet_generator(input_shape, widths, g.residual_blocks, g.upsampling, name=name,
                                        edge_kernel=g.edge_kernel, input_skip=g.input_skip,
                                        padding=g.padding, full_resolution_skip=g.full_resolution_skip,
                                        picture_context=g.picture_context)
            return unet_generator(input_shape, tuple(g.widths or (32, 64, 128, 256)), name=name,
                                  input_skip=g.input_skip, full_resolution_skip=g.full_resolution_skip,
                                  edge_kernel=g.edge_kernel, padding=g.padding, picture_context=g.picture_context)

        d = o.discriminator
        with precision(dtype):
            networks = (generator("generator_ab"), generator("generator_ba"),
                        patchgan(input_shape, d.filters, d.downsamplings, name="discriminator_a", norm=d.norm),
                        patchgan(input_shape, d.filters, d.downsamplings, name="discriminator_b", norm=d.norm))
        return CycleGAN(*networks, gan_loss=o.gan_loss, cycle_weight=o.cycle_weight,
                        identity_weight=o.identity_weight, pool_size=o.pool_size,
                        discriminator_lr_ratio=o.discriminator_lr_ratio, r1_weight=o.r1_weight, name="cyclegan")

    def public_model(self, model):
        """convforge.build_model hands out the whole CycleGAN (calling it translates A -> B)."""
        return model

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """Nothing beyond the optimizer: CycleGAN computes its own losses (the discriminators' optimizer is a
        copy of the recipe's, as CycleGAN trains both sides alike)."""
        return {}

    def inference_model(self, model):
        """The A -> B generator (a CycleGAN's, or the model itself when it already is a generator)."""
        return getattr(model, "generator_ab", model)

    def other_models(self, model):
        """The B -> A generator, saved as model_b2a.keras."""
        return {"model_b2a.keras": model.generator_ba} if hasattr(model, "generator_ba") else {}

    def callbacks(self, model, data, run_dir):
        """A sample grid (A, A -> B, A -> B -> A; the same for B) in run_dir/samples/ after every epoch."""
        from convforge.train.cyclegan import SampleGrid
        from convforge.train.datasets import first_pictures

        a = first_pictures(data.val if data.val is not None else data.train, 4).astype(np.float32)
        b = first_pictures(data.domain_b, 4).astype(np.float32)
        return [SampleGrid(a, b, run_dir / "samples")]

    def scores_export(self, recipe, direction):
        """Only A -> B has ground truth (data.paired_val: A's val scenes drawn in B's style) to score against."""
        return direction == "a2b" and recipe.data.paired_val is not None

    def pair(self, model, images, targets):
        """Training batches are (pictures of A, pictures of B) already; val batches keep their dict targets."""
        return images, targets

    @classmethod
    def recognizes(cls, model):
        """Never from the structure alone: a generator looks like a style network; a translation model is known
        by its run's recipe."""
        return False

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """PSNR and SSIM of the translations against the paired ground truth (and of the untranslated pictures:
        the identity baseline), and the judge classifier's accuracy where head.judge names one."""
        import tensorflow as tf

        judge = self._judge()
        sums, counts = {}, {}

        def add(name, values):
            values = np.asarray(values, np.float64).ravel()
            sums[name] = sums.get(name, 0.0) + float(values.sum())
            counts[name] = counts.get(name, 0) + len(values)

        for images, targets in dataset:
            images = np.asarray(images, np.float32)  # numpy: `model` may be an exported artifact's runner
            translated = np.clip(np.asarray(model(images, training=False), np.float32), 0.0, 1.0)
            targets = targets if isinstance(targets, dict) else {"label": targets}
            if "paired" in targets:
                truth = tf.cast(targets["paired"], tf.float32)
                for prefix, picture in (("", translated), ("identity_", images)):
                    add(prefix + "psnr", tf.image.psnr(picture, truth, 1.0))
                    add(prefix + "ssim", tf.image.ssim(picture, truth, 1.0))
            if judge is not None and "label" in targets:
                labels = np.asarray(targets["label"])
                kept = labels >= 0
                if kept.any():
                    shown = [("judge_accuracy", translated), ("judge_accuracy_identity", images)]
                    if "paired" in targets:
                        shown.append(("judge_accuracy_truth", truth))
                    for name, picture in shown:
                        add(name, judge(np.asarray(picture)[kept]) == labels[kept])
        metrics = {name: sums[name] / counts[name] for name in sums}
        if "psnr" in metrics:
            metrics["psnr_gain"] = metrics["psnr"] - metrics["identity_psnr"]
        return metrics

    def _judge(self):
        """pictures on 0..1 -> class ids by head.judge's classifier (its own preprocessing), or None."""
        if not self.options.judge:
            return None
        from convforge.modelfile import load_model
        from convforge.preprocessing import preprocess, saved_beside
        from convforge.runs import find_run

        run = find_run(self.options.judge)
        classifier = load_model(run.model_path, precision="float32")
        spec, _ = saved_beside(run.model_path, tuple(int(v) for v in classifier.inputs[0].shape[1:]))

        def classify(pictures):
            x = preprocess(np.round(np.clip(pictures, 0, 1) * 255.0), spec)
            out = classifier(x, training=False)
            out = out[0] if isinstance(out, (list, tuple)) else out
            return np.argmax(np.asarray(out), -1)

        return classify

    def describe(self, outputs, class_names, top_k=3):
        """The translated picture's mean brightness (a picture has no classes to list)."""
        picture = np.asarray(outputs, np.float32)
        return [{"class": "translated", "probability": float(picture.mean())}]

    def draw(self, image, outputs, class_names, out_path):
        """Write the picture beside its translation."""
        from convforge.visualize import draw_beside

        return draw_beside(image, outputs, out_path)

