"""3D shape from one image: an occupancy grid of S^3 voxels in the camera's frame (x right, y up, z to the viewer).

Target: the record's .binvox grid (data.sources.binvox; the solids set writes them), read when the example is
parsed and resampled to the head's voxel_size (any-pooled from a multiple, else nearest). The model outputs
occupancy logits (B, S, S, S); the inference model {"occupancy": (B, S, S, S) probabilities}. Evaluation: the
mean per-example voxel IoU at 0.5 (`voxel_iou`, the headline), the sweep over thresholds 0.1-0.9 and the best
one. `predict --out` writes the mesh of the grid (marching cubes) as OBJ and a PNG of it beside the input.
No geometric augmentation carries voxels (a flip of the image alone would contradict its grid).
"""
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from convforge.tasks import register_task
from convforge.tasks.base import Parser, Task


class VoxelOptions(BaseModel):
    """The `head:` section of a shape3d recipe."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["voxels"] = "voxels"
    voxel_size: int = Field(32, description="the grid's side S (a power of 2 from 8 to 128; 32 is 3D-R2N2's)")
    level: Literal["C3", "C4", "C5"] = Field("C5", description="the backbone level the head pools")
    latent: int = Field(128, ge=1, description="the latent vector's width")
    channels: int = Field(64, ge=8, description="features per voxel of the 4^3 grid the decoder starts from "
                                                "(halving at each doubling)")
    upsampling: Literal["subvoxel", "conv_transpose"] = Field(
        "subvoxel", description="subvoxel (transposed 3D convs with kernel = stride = 2, as a matmul: fast on "
                                "CPU) or conv_transpose (Keras' Conv3DTranspose, 4x4x4: "
                                "overlapping kernels, 3-10x slower to train on CPU)")
    positive_weight: float = Field(3.0, gt=0, description="weight of occupied voxels in the cross-entropy (they "
                                                          "are a few percent of a grid)")

    @field_validator("voxel_size")
    @classmethod
    def _power_of_two(cls, value):
        if value < 8 or value > 128 or 2 ** round(math.log2(value)) != value:
            raise ValueError(f"{value} is not accepted; accepted: 8, 16, 32, 64 or 128")
        return value


def _read_grid(path, size):
    """A .binvox file as a (size, size, size) uint8 grid (numpy side of the parser)."""
    from convforge.data.sources.binvox import read_binvox, resample

    return resample(read_binvox(path.decode() if isinstance(path, bytes) else path), int(size)).astype(np.uint8)


def _has_grid(example):
    """Whether an example names a .binvox grid (TFRecord examples carry none)."""
    import tensorflow as tf

    return tf.strings.length(example["voxels"]) > 0 if "voxels" in example else tf.constant(False)


@register_task
class Shape3D(Task):
    """Infer an object's voxel occupancy from one image."""

    name = "shape3d"
    headline_metric = "voxel_iou"
    annotations = frozenset({"voxels"})
    Options = VoxelOptions

    @property
    def levels(self):
        """The backbone level the head pools."""
        return (self.options.level,)

    @property
    def parser(self):
        """Records with a .binvox grid; the target is that grid at the head's voxel size."""
        import functools

        def target(example, context):
            import tensorflow as tf

            from convforge.errors import DataError

            if "voxels" not in example:
                raise DataError("shape3d reads each image's .binvox grid (source: binvox or solids); this source "
                                "carries none (TFRecord examples hold no voxels)")
            size = self.options.voxel_size
            grid = tf.numpy_function(functools.partial(_read_grid, size=size), [example["voxels"]], tf.uint8,
                                     stateful=False)
            return tf.ensure_shape(grid, [size, size, size])

        return Parser(keeps_record=lambda r: bool(r.get("voxels")), keeps_example=_has_grid, target=target)

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """The backbone's level into the voxel head: occupancy logits (B, S, S, S)."""
        import keras

        from convforge.backbones import build_backbone, feature_levels
        from convforge.backbones.common import precision
        from convforge.heads.classification import head_dtype
        from convforge.heads.voxels import voxel_head
        from convforge.registry import require_levels

        o = self.options
        require_levels(architecture, self.levels, options, who="the voxel head")
        backbone = build_backbone(architecture, input_shape=input_shape, include_top=False, dtype=dtype,
                                  **(options or {}))
        with precision(dtype):
            logits = voxel_head(feature_levels(backbone)[o.level], o.voxel_size, o.latent, o.channels, o.upsampling,
                                head_dtype())
        return keras.Model(backbone.input, logits, name=f"{architecture}_voxels")

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """Weighted voxel cross-entropy; the voxel IoU at 0.5 as a metric."""
        from convforge.heads.voxels import VoxelIoU, VoxelLoss

        return dict(loss=VoxelLoss(self.options.positive_weight), metrics=[VoxelIoU()])

    def inference_model(self, model):
        """The model with its logits turned into {"occupancy": probabilities}."""
        import keras

        from convforge.heads.voxels import Occupancy

        if isinstance(model.output, dict):
            return model
        return keras.Model(model.input, Occupancy(name="occupancy")(model.output), name=model.name)

    @classmethod
    def recognizes(cls, model):
        """A dict output of exactly `occupancy`."""
        return isinstance(model.output, dict) and set(model.output) == {"occupancy"}

    def spatial_of(self, targets):
        """No geometric augmentation moves a grid (check_augment refuses them for this task)."""
        return {}

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """Mean voxel IoU at 0.5, the threshold sweep and its best threshold."""
        from convforge.evaluate.voxels import threshold_sweep, voxel_iou

        ious, sweeps, count = [], [], 0
        for images, grids in dataset:
            occupancy = np.asarray(model(images, training=False)["occupancy"], "float32")
            grids = np.asarray(grids)
            ious.append(voxel_iou(occupancy, grids))
            sweeps.append({t: v * len(grids) for t, v in threshold_sweep(occupancy, grids).items()})
            count += len(grids)
        if not count:
            return {"voxel_iou": 0.0, "voxel_iou_sweep": {}, "best_threshold": 0.5, "count": 0}
        sweep = {f"{t:.1f}": sum(s[t] for s in sweeps) / count for t in sweeps[0]}
        best = max(sweep, key=sweep.get)
        return {"voxel_iou": float(np.concatenate(ious).mean()), "voxel_iou_sweep": sweep,
                "best_threshold": float(best), "best_voxel_iou": sweep[best], "count": count}

    def describe(self, outputs, class_names, top_k=3):
        """The share of the grid predicted occupied."""
        occupancy = np.asarray(outputs["occupancy"], "float32")
        return [{"class": "occupied voxels", "probability": float((occupancy > 0.5).mean())}]

    def draw(self, image, outputs, class_names, out_path):
        """Write the grid's mesh (marching cubes) as <out>.obj and a PNG of the image beside the mesh's render."""
        import pathlib

        from convforge.mesh import grid_mesh, write_obj
        from convforge.visualize import draw_mesh

        vertices, faces = grid_mesh(np.asarray(outputs["occupancy"], "float32"))
        write_obj(pathlib.Path(out_path).with_suffix(".obj"), vertices, faces)
        return draw_mesh(image, vertices, faces, out_path)
