"""Keypoints: face landmarks and body joints of one object per example, by heatmaps or direct regression.

Target: the keypoints (K, 3) of the example's largest non-crowd object with labelled points: x, y normalized
to the image and COCO visibility v (0 unlabelled, which no loss counts). The run's names are the dataset's
keypoint names (class_names.json holds them), which evaluation reads to find the eyes (NME) and the torso (PCK),
augmentation reads to swap left and right on a flip, and predict reads to draw the skeleton. Evaluation:
`pck` (PCK@0.2) and `mean_error` in input pixels, and for faces (`metric: nme`, lower is better, the headline)
`nme` and `failure_rate` (NME > 0.1); for bodies the headline is pck.
The inference model returns {"keypoints": (B, K, 2) x, y normalized to the input, "scores": (B, K)}.

With `top_down: true` (pose, several people per image) every labelled object is an example of its own: the
image cut to the object's box, grown by `box_padding` and widened to the input's aspect (Xiao et al.'s Simple
Baselines crop people so), its keypoints in the crop's terms. Evaluation then also maps each crop's keypoints
back into its image and scores them against the whole images with COCO's OKS AP (pycocotools), the boxes being
the ground truth's (`oks_boxes`); convforge.topdown runs the same crops on a person detector's boxes.
"""
import math
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from convforge.tasks import register_task
from convforge.tasks.base import Parser, Task

LEVELS = Literal["C2", "C3", "C4", "C5"]


def _labelled_counts(example):
    """Per object: how many of its keypoints are labelled (v > 0), 0 for crowd regions."""
    import tensorflow as tf

    labelled = tf.reduce_sum(tf.cast(example["keypoints"][..., 2] > 0, tf.int32), axis=-1)
    return tf.where(example["is_crowd"], 0, labelled)


def _has_keypoints(example):
    """Whether an example has an object with labelled keypoints."""
    import tensorflow as tf

    return tf.reduce_any(_labelled_counts(example) > 0)


def _target(example, context):
    """The keypoints (K, 3) of the largest object that has labelled ones."""
    import tensorflow as tf

    from convforge.data.instances import largest_box_index

    i = largest_box_index(example["boxes"], _labelled_counts(example) > 0)
    return tf.ensure_shape(tf.cast(example["keypoints"][i], tf.float32), [context.num_keypoints, 3])


def _labelled(obj):
    """Whether an object is a non-crowd one with labelled keypoints."""
    return not obj.get("iscrowd") and any(v > 0 for v in (obj.get("keypoints") or [])[2::3])


def _record_has_keypoints(record):
    """Whether a record has a non-crowd object with labelled keypoints."""
    return any(_labelled(o) for o in record.get("objects", ()))


def _crop_views(record, aspect, padding):
    """One view of the record per labelled object, cut to the object's grown box (data.instances.crop_view)."""
    from convforge.data.instances import crop_view

    return [crop_view(record, o, padding, aspect) for o in record.get("objects", ()) if _labelled(o)]


class _KeypointOptions(BaseModel):
    """What both keypoint heads share."""

    model_config = ConfigDict(extra="forbid")
    level: LEVELS = Field("C5", description="the backbone level the head reads")
    num_keypoints: Optional[int] = Field(None, ge=1, description="keypoints per object (default: the dataset's)")
    metric: Literal["nme", "pck"] = Field("nme", description="the headline metric: nme (faces; lower is better) "
                                                             "or pck (PCK@0.2, bodies)")
    top_down: bool = Field(False, description="one example per labelled object, cut to its box (grown by "
                                              "box_padding, widened to the input's aspect), as top-down pose "
                                              "models train; false: the image's largest object, whole image")
    box_padding: float = Field(1.25, ge=1.0, description="top_down: how much a crop grows the object's box")


class HeatmapOptions(_KeypointOptions):
    """The `head:` section of a heatmap keypoint recipe."""

    name: Literal["heatmap"] = "heatmap"
    stride: Literal[1, 2, 4, 8] = Field(4, description="the heatmaps' stride (input pixels per cell)")
    upsampling: Literal["transpose", "bilinear"] = Field(
        "transpose", description="how the head climbs from the level to the heatmaps' stride: transposed 4x4 "
                                 "convs (Simple Baselines) or bilinear x2 + 3x3 convs")
    channels: int = Field(64, ge=1, description="the upsampling layers' width")
    sigma: float = Field(1.5, gt=0, description="the target Gaussians' standard deviation, in heatmap cells")
    loss: Literal["cross_entropy", "mse"] = Field(
        "cross_entropy", description="cross_entropy (a softmax over each map's cells against the normalized "
                                     "Gaussian) or mse (Simple Baselines' squared error against the Gaussian)")


class RegressionOptions(_KeypointOptions):
    """The `head:` section of a direct-regression keypoint recipe."""

    name: Literal["regression"] = "regression"
    loss: Literal["wing", "l1", "l2"] = Field("wing", description="the coordinate loss, on errors in input pixels")
    wing_width: float = Field(10.0, gt=0, description="Wing loss: where its log part ends, in pixels")
    wing_curvature: float = Field(2.0, gt=0, description="Wing loss: the log part's curvature")
    visibility_weight: float = Field(0.1, ge=0, description="weight of the visibility cross-entropy")
    reduce_channels: int = Field(32, ge=1, description="channels of the 1x1 conv before the regressor flattens "
                                                        "the feature map")
    hidden_units: int = Field(256, ge=1, description="width of the regressor's hidden layer")


HEADS = {"heatmap": HeatmapOptions, "regression": RegressionOptions}


@register_task
class Keypoints(Task):
    """Locate K keypoints of the image's main object (face landmarks, body joints)."""

    name = "keypoints"
    annotations = frozenset({"keypoints"})
    Options = HeatmapOptions

    @property
    def parser(self):
        """The largest labelled object of each image, or (top_down) every labelled object in its own crop."""
        import functools

        views = functools.partial(_crop_views, padding=self.options.box_padding) if self.options.top_down else None
        return Parser(keeps_record=_record_has_keypoints, keeps_example=_has_keypoints, target=_target, views=views)

    @classmethod
    def options_class(cls, options):
        """The options class of the head a `head:` section names (heatmap by default)."""
        name = (options or {}).get("name", "heatmap") if isinstance(options, dict) else getattr(options, "name",
                                                                                                   "heatmap")
        if name not in HEADS:
            from convforge.errors import close_matches

            raise ValueError(f"head name {name!r} is not a keypoint head{close_matches(str(name), HEADS)}; "
                             f"accepted: {', '.join(HEADS)}")
        return HEADS[name]

    @property
    def levels(self):
        """The backbone level the head reads."""
        return (self.options.level,)

    @property
    def headline_metric(self):
        """nme or pck, as the head's `metric` says."""
        return self.options.metric

    @property
    def higher_is_better(self):
        """PCK rises with accuracy, NME falls."""
        return self.options.metric != "nme"

    def label_names(self, class_names, source=None):
        """The model's outputs are the source's keypoints, so its names are theirs."""
        names = getattr(source, "keypoint_names", None)
        return list(names) if names else list(class_names)

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """The backbone's level into the head: heatmaps (B, H / stride, W / stride, K) or regressed (B, K, 3)."""
        import keras

        from convforge.backbones import build_backbone, feature_levels
        from convforge.backbones.common import level_strides, precision
        from convforge.errors import ModelError
        from convforge.heads import keypoints as head
        from convforge.heads.classification import head_dtype
        from convforge.registry import require_levels

        o = self.options
        k = o.num_keypoints or num_classes
        require_levels(architecture, self.levels, options, who=f"the {o.name} keypoint head")
        backbone = build_backbone(architecture, input_shape=input_shape, include_top=False, dtype=dtype,
                                  **(options or {}))
        feature = feature_levels(backbone)[o.level]
        with precision(dtype):
            if o.name == "heatmap":
                stride = level_strides(backbone)[o.level]
                steps = math.log2(stride / o.stride)
                if steps < 0 or steps != int(steps):
                    raise ModelError(f"head.stride {o.stride} cannot be reached from {o.level} (stride {stride}) by "
                                     f"x2 upsamplings; accepted: a stride of {stride} divided by a power of 2")
                output = head.heatmap_head(feature, k, int(steps), o.channels, o.upsampling, head_dtype())
            else:
                output = head.regression_head(feature, k, o.reduce_channels, o.hidden_units, head_dtype())
        return keras.Model(backbone.input, output, name=f"{architecture}_keypoints_{o.name}")

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """The heatmap MSE (or the Wing/L1/L2 coordinate loss); the mean point error in pixels as a metric."""
        from convforge.heads.keypoints import HeatmapLoss, PointError, RegressionLoss

        o = self.options
        size = model.input_shape[1:3]
        if o.name == "heatmap":
            loss = HeatmapLoss(o.sigma, o.loss)
            metric = PointError(size, sigma=o.sigma, logits=o.loss == "cross_entropy")
        else:
            loss = RegressionLoss(size, o.loss, o.wing_width, o.wing_curvature, o.visibility_weight)
            metric = PointError(size)
        return dict(loss=loss, metrics=[metric])

    def inference_model(self, model):
        """The model with its output decoded: {"keypoints" (B, K, 2), "scores" (B, K)}."""
        import keras

        from convforge.heads.keypoints import DecodeHeatmaps, DecodeRegression

        if isinstance(model.output, dict):
            return model
        if len(model.output.shape) == 4:
            o = self.options
            decode = DecodeHeatmaps(getattr(o, "sigma", None), logits=getattr(o, "loss", "") == "cross_entropy",
                                    name="decode_keypoints")
        else:
            decode = DecodeRegression(name="decode_keypoints")
            # Decoded from the two tensors the loss joins, so each keeps its own int8 scale (heads.keypoints).
            names = {layer.name for layer in model.layers}
            if {"keypoint_xy", "keypoint_visibility"} <= names:
                pair = [model.get_layer("keypoint_xy").output, model.get_layer("keypoint_visibility").output]
                return keras.Model(model.input, decode(pair), name=model.name)
        return keras.Model(model.input, decode(model.output), name=model.name)

    @classmethod
    def recognizes(cls, model):
        """A dict output of exactly `keypoints` and `scores`."""
        return isinstance(model.output, dict) and set(model.output) == {"keypoints", "scores"}

    def spatial_of(self, targets):
        """The one object's keypoints as (B, 1, K, 3)."""
        return {"keypoints": targets[:, None]}

    def with_spatial(self, targets, moved):
        """The moved keypoints."""
        return moved["keypoints"][:, 0]

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """PCK@0.2 and the mean error in input pixels over the labelled keypoints, NME and failure rate for faces,
        and for crops (top_down) of Records the OKS AP of their images (ground-truth boxes)."""
        from convforge.evaluate.keypoints import nme, pck

        predicted, scores, truth = [], [], []
        size = None
        for images, targets in dataset:
            out = model(images, training=False)
            size = np.asarray(images).shape[1:3]
            predicted.append(np.asarray(out["keypoints"], "float32"))
            scores.append(np.asarray(out["scores"], "float32"))
            truth.append(np.asarray(targets, "float32"))
        if not truth:
            return {"nme": 0.0, "failure_rate": 0.0, "pck": 0.0, "mean_error": 0.0, "count": 0}
        scale = np.array([size[1], size[0]], "float32")
        pred, true = np.concatenate(predicted) * scale, np.concatenate(truth)
        visibility, true = true[..., 2], true[..., :2] * scale
        faces = nme(pred, true, visibility, class_names)
        labelled = visibility > 0
        error = np.linalg.norm(pred - true, axis=-1)
        metrics = {**pck(pred, true, visibility, class_names),
                   "mean_error": float(error[labelled].mean()) if labelled.any() else 0.0, "count": int(len(true))}
        if self.options.metric == "nme":  # a body's eyes are no scale for its joints: NME is for faces
            metrics = {"nme": faces["nme"], "failure_rate": faces["failure_rate"],
                       "nme_normalization": faces["nme_normalization"], **metrics}
        from convforge.data.records import Records
        from convforge.evaluate.keypoints import oks_sigmas

        if self.options.top_down and isinstance(source, Records) and oks_sigmas(class_names):
            metrics.update(self._crops_oks(source, np.concatenate(predicted), np.concatenate(scores),
                                           size[1] / size[0], oks_sigmas(class_names), out_dir))
        return metrics

    def _crops_oks(self, records, points, scores, aspect, sigmas, out_dir=None):
        """COCO keypoint AP (OKS) of the crops' keypoints, mapped back into their images, over whole images."""
        from convforge.evaluate.coco import image_id_of, keypoints_to_coco, oks_ap

        parser, owners = self.parser, []
        for index, record in enumerate(records):
            if parser.keeps_record(record):
                owners += [(image_id_of(record, index), view) for view in parser.views(record, aspect)]
        if len(owners) != len(points):
            from convforge.errors import DataError

            raise DataError(f"{records.source or 'the val source'} gives {len(owners)} crops but its pipeline gave "
                            f"{len(points)}; evaluate it without filtering its images")
        category_ids = records.category_ids or list(range(len(records.class_names)))
        results = []
        for (image_id, view), xy, s in zip(owners, points, scores):
            box = np.array(view["crop"]) * np.tile([view["image_height"], view["image_width"]], 2)
            category = int(category_ids[view["objects"][0]["category_id"]])
            results += keypoints_to_coco(image_id, category, box[None], xy[None], s[None], np.ones(1))
        return oks_ap(records, results, sigmas, "ground_truth", out_dir)

    def describe(self, outputs, class_names, top_k=3):
        """The keypoints (x, y normalized) with their scores, the least sure ones first."""
        points = np.asarray(outputs["keypoints"], "float32").reshape(-1, 2)
        scores = np.asarray(outputs["scores"], "float32").reshape(-1)
        name = lambda i: class_names[i] if i < len(class_names) else f"point {i}"  # noqa: E731
        order = np.argsort(scores)[:top_k]
        return [{"class": name(int(i)), "probability": float(scores[i]),
                 "point": [round(float(v), 4) for v in points[i]]} for i in order]

    def draw(self, image, outputs, class_names, out_path):
        """The image with the keypoints and the skeleton their names imply."""
        from convforge.visualize import draw_keypoints

        return draw_keypoints(image, np.asarray(outputs["keypoints"], "float32").reshape(-1, 2),
                              np.asarray(outputs["scores"], "float32").reshape(-1), class_names, out_path)
