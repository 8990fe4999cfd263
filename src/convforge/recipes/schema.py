"""The pydantic models of a recipe: one class per section, every key checked, unknown keys rejected.

A recipe is YAML with five sections whose keys mirror the Python API's argument names:

    name: resnet18_shapes
    task: classification
    model:  {architecture: resnet18, input_shape: [64, 64, 3], num_classes: 4, options: {se_ratio: 16}}
    data:   {train: {source: shapes, path: data/shapes64, n: 2000}, batch_size: 32, augment: [{name: flip}]}
    train:  {epochs: 10, optimizer: {name: adamw, learning_rate: 0.001}, schedule: {name: cosine}}
    export: {formats: [saved_model, tflite_int8, onnx]}

Validation imports nothing heavy at module import; checking `model.architecture` loads the model registry and
`train.optimizer` reads `keras.optimizers`, both on first use.

Paths: `model.weights` and the file fields of data sources (coco `annotations`/`images`, voc `root`,
image_folder `path`, tfrecord `pattern`) must exist. `load_recipe` makes them absolute against the folder of
the file that set them (the working directory for `--set`); a relative path given to these models directly is
checked against the working directory. The shapes `path` and `export.out_dir` are outputs, created on demand
and relative to the working directory; they need only be writable.

The `data.val` rule:
    - omitted or null: for sources with a held-out split (shapes, digits, voc), the train source with
      `split: val` (so shapes' n, size and seed stay in step with train); for others, no validation set;
    - a mapping without `source`, or with train's `source`: merged over train's fields, with `split: val`
      unless it says otherwise (`val: {split: test}` for voc, `val: {path: data/val}` for image_folder);
    - a mapping naming another source: used as written.
The resolved recipe (`Recipe.to_dict()`) always spells the val source out.

Kinds: a mapping keyed by `source` (data) or `name` (optimizer, schedule) is one kind; in `base:` inheritance
and `--set`, switching the kind replaces the mapping instead of merging into it.
"""
import glob
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError,
                      ValidationInfo, field_validator, model_validator)

from convforge.errors import close_matches
from convforge.export.formats import FORMATS as _FORMAT_TABLE
from convforge.recipes.optimizers import LIST_ARGUMENTS, OPTIMIZERS

# The built-in tasks, as the registry (convforge.tasks) lists them; a task registered later is accepted too.
TASKS = ("classification", "localization")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker", "tpu")
EXPORT_FORMATS = tuple(_FORMAT_TABLE)
NORMALIZATIONS = ("imagenet", "unit")
SPLITS = ("train", "val")
# The shapes generator's classes (data/shapes.py SHAPE_CLASSES; a test keeps the two equal), named here so
# validating a recipe does not import the generator.
SHAPE_NAMES = ("circle", "rectangle", "triangle", "star")
# Used until convforge.data.augment (which owns the real table) can be imported.
AUGMENTATION_NAMES = ("flip", "crop", "translate", "rotate", "color_jitter", "rand_augment", "mixup", "cutmix")
# They mix labels across images, which a box target cannot follow (used with the fallback names only).
CLASSIFICATION_ONLY_AUGMENTATIONS = ("mixup", "cutmix")
# Names that take a whole keyword set of their own, or that other recipe fields set.
_RESERVED_OPTIONS = ("input_shape", "num_classes", "include_top", "pooling", "name")

Int = Annotated[int, Field(strict=True)]
PosInt = Annotated[int, Field(strict=True, gt=0)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
Float = Annotated[float, Field(strict=True)]
PosFloat = Annotated[float, Field(strict=True, gt=0)]
NonNegFloat = Annotated[float, Field(strict=True, ge=0)]
Fraction = Annotated[float, Field(strict=True, gt=0, lt=1)]
Bool = Annotated[bool, Field(strict=True)]


class FieldError(ValueError):
    """A validation failure that belongs to a field below the validator that found it."""

    def __init__(self, loc, message):
        super().__init__(message)
        self.loc = tuple(loc)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _accepted(values):
    return ", ".join(str(v) for v in values)


def _check_exists(value, kind):
    """Return value when it names an existing file ('file') or folder ('dir'), else raise ValueError."""
    path = Path(value).expanduser()
    ok = path.is_file() if kind == "file" else path.is_dir()
    if not ok:
        what = "file" if kind == "file" else "folder"
        found = " (it is a folder)" if kind == "file" and path.is_dir() else (
            " (it is a file)" if kind == "dir" and path.is_file() else "")
        raise ValueError(f"{what} {str(value)!r} not found{found}")
    return value


def _check_writable(value):
    """Return value when it is, or could be created as, a folder we may write in."""
    path = Path(value).expanduser().absolute()
    if path.exists():
        ok = path.is_dir() and os.access(path, os.W_OK)
    else:
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        ok = parent.is_dir() and os.access(parent, os.W_OK)
    if not ok:
        raise ValueError(f"{str(value)!r} is not a folder that can be written")
    return value


# ---------------------------------------------------------------------------------------------------- model

class ModelSection(_Section):
    """Which architecture, at what input size, with how many classes and which family options."""

    architecture: Optional[str] = Field(None, description="a registered name, see `convforge models`; left out "
                                                          "for a task that builds its networks from head: "
                                                          "(translation)")
    input_shape: Optional[Annotated[list[PosInt], Field(min_length=3, max_length=3)]] = Field(
        None, description="[height, width, channels]; null: the architecture's default")
    num_classes: Optional[PosInt] = Field(None, description="null: the number of class names in the data")
    options: dict[str, Any] = Field(default_factory=dict, description="family options passed to the builder")
    weights: Optional[str] = Field(None, description="a .keras or .weights.h5 file to start from")

    @field_validator("architecture")
    @classmethod
    def _registered(cls, value):
        from convforge.registry import get_spec, list_models

        if value is None:
            return value
        names = list_models()
        if str(value).lower() not in names:
            raise ValueError(f"{value!r} is not a registered architecture{close_matches(value, names)}; "
                             f"accepted: {_accepted(names)}")
        return get_spec(value).name

    @field_validator("input_shape")
    @classmethod
    def _large_enough(cls, value, info: ValidationInfo):
        name = info.data.get("architecture")
        if value is None or name is None:
            return value
        from convforge.registry import get_spec

        spec = get_spec(name)
        if min(value[:2]) < spec.min_input_size:
            raise ValueError(f"{value} is too small for {name}; accepted: height and width of at least "
                             f"{spec.min_input_size} (default {list(spec.default_input_shape)})")
        return value

    @field_validator("options")
    @classmethod
    def _builder_takes(cls, value, info: ValidationInfo):
        name = info.data.get("architecture")
        if name is None:
            return value
        from convforge.registry import get_spec

        params = get_spec(name).option_names  # read from the builder's source: no Keras import
        accepted = [p for p in params if p not in _RESERVED_OPTIONS]
        for key in value:
            if key in _RESERVED_OPTIONS:
                where = {"input_shape": "model.input_shape", "num_classes": "model.num_classes"}.get(
                    key, "the task")
                raise FieldError((key,), f"{key!r} is not an option here: {where} sets it")
            if key not in params:
                raise FieldError((key,), f"{name} takes no option {key!r}{close_matches(key, accepted)}; "
                                         f"accepted: {_accepted(accepted)}")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, value):
        if value is None:
            return value
        if not (value.endswith(".keras") or value.endswith(".weights.h5")):
            raise ValueError(f"{value!r} is not a Keras weights file; accepted: a .keras or .weights.h5 file")
        return _check_exists(value, "file")

    @model_validator(mode="after")
    def _default_input_shape(self):
        # Spelled out so that the resolved recipe says what was built.
        if self.input_shape is None and self.architecture is not None:
            from convforge.registry import get_spec

            self.input_shape = list(get_spec(self.architecture).default_input_shape)
        return self


# ----------------------------------------------------------------------------------------------------- data

class _SyntheticSource(_Section):
    """A procedural set (data.synthetic), generated once into `path` and reused while its arguments stay."""

    file_fields: ClassVar[tuple] = ()
    path: str = Field("data/synthetic", description="cache folder, created on demand (relative to the working "
                                                    "directory)")
    n: PosInt = Field(2000, description="images in the whole set, train and val together")
    size: PosInt = Field(64, description="image height and width")
    seed: Int = 0
    val_fraction: Fraction = 0.2
    split: Literal[SPLITS] = "train"

    @field_validator("path")
    @classmethod
    def _writable(cls, value):
        return _check_writable(value)


class ShapesSource(_SyntheticSource):
    """Synthetic images of coloured shapes on noise (data.shapes)."""

    source: Literal["shapes"]
    path: str = Field("data/shapes", description="cache folder, created on demand (relative to the working "
                                                 "directory)")
    objects: Annotated[list[PosInt], Field(min_length=2, max_length=2)] = Field(
        default_factory=lambda: [1, 1], description="[min, max] shapes per image")
    classes: Annotated[list[Literal[SHAPE_NAMES]], Field(min_length=1)] = Field(
        default_factory=lambda: list(SHAPE_NAMES), description="the shapes to draw, in class-id order")
    rotate: Bool = Field(True, description="rotate rectangles, triangles and stars by a random angle")
    style: Literal["textured", "flat"] = Field("textured", description="textured, or the same scenes in flat "
                                                                       "colours (paired for the same seed)")

    @field_validator("objects")
    @classmethod
    def _ordered(cls, value):
        if value[0] > value[1]:
            raise ValueError(f"{value} is not [min, max]; accepted: min <= max")
        return value

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value):
        if len(set(value)) != len(value):
            raise ValueError(f"{value} names a shape twice; accepted: distinct names of {', '.join(SHAPE_NAMES)}")
        return value


class FacesSource(_SyntheticSource):
    """Synthetic faces with 68 (or 5) landmarks in the 300-W order (data.faces)."""

    source: Literal["faces"]
    path: str = Field("data/faces", description="cache folder, created on demand (relative to the working "
                                                "directory)")
    size: PosInt = Field(96, description="image height and width")
    landmarks: Literal[68, 5] = Field(68, description="68 (the 300-W points) or 5 (outer eye corners, nose tip, "
                                                      "mouth corners)")


class FiguresSource(_SyntheticSource):
    """Synthetic people with the 17 COCO keypoints, one to three per image (data.figures)."""

    source: Literal["figures"]
    path: str = Field("data/figures", description="cache folder, created on demand (relative to the working "
                                                  "directory)")
    size: PosInt = Field(128, description="image height and width")


class SolidsSource(_SyntheticSource):
    """Synthetic solids with voxel grids (data.solids)."""

    source: Literal["solids"]
    path: str = Field("data/solids", description="cache folder, created on demand (relative to the working "
                                                 "directory)")
    voxels: PosInt = Field(32, description="the grids' side")


class _FileSource(_Section):
    """A source read from the user's files: each field named in `must_exist` must name an existing path."""

    must_exist: ClassVar[dict] = {}  # field -> "file" | "dir" | "glob"

    @field_validator("*")
    @classmethod
    def _exists(cls, value, info: ValidationInfo):
        kind = cls.must_exist.get(info.field_name)
        if kind == "glob":
            if not [p for p in glob.glob(os.path.expanduser(value)) if os.path.isfile(p)]:
                raise ValueError(f"{value!r} matches no file")
            return value
        return _check_exists(value, kind) if kind else value


class CocoSource(_FileSource):
    """A COCO-format annotation file and the folder of the images it names."""

    must_exist: ClassVar[dict] = {"annotations": "file", "images": "dir"}
    file_fields: ClassVar[tuple] = tuple(must_exist)
    source: Literal["coco"]
    annotations: str = Field(description="instances_*.json")
    images: str = Field(description="folder of the images")


class VocSource(_FileSource):
    """A Pascal VOC folder (the one holding Annotations/, JPEGImages/ and ImageSets/)."""

    must_exist: ClassVar[dict] = {"root": "dir"}
    file_fields: ClassVar[tuple] = tuple(must_exist)
    source: Literal["voc"]
    root: str
    split: Literal["train", "val", "trainval", "test"] = "train"
    masks: Optional[Literal["class", "object"]] = Field(
        None, description="read the segmentation split's mask PNGs (SegmentationClass/, and SegmentationObject/ for "
                          "'object') instead of Annotations/ boxes: 'class' for semantic segmentation, 'object' "
                          "for instances")


class PtsSource(_FileSource):
    """A folder of face images, each with its 300-W .pts landmarks file beside it (data.sources.pts)."""

    must_exist: ClassVar[dict] = {"path": "dir"}
    file_fields: ClassVar[tuple] = tuple(must_exist)
    source: Literal["pts"]
    path: str
    one_based: Bool = Field(False, description="the points are indexed from 1 (MATLAB tools): subtract 1")


class BinvoxSource(_FileSource):
    """A folder of images, each with its .binvox voxel grid beside it; first-level sub-folders are the classes."""

    must_exist: ClassVar[dict] = {"path": "dir"}
    file_fields: ClassVar[tuple] = tuple(must_exist)
    source: Literal["binvox"]
    path: str


class ImageFolderSource(_FileSource):
    """One sub-folder of images per class; the sorted folder names are the class names."""

    must_exist: ClassVar[dict] = {"path": "dir"}
    file_fields: ClassVar[tuple] = tuple(must_exist)
    source: Literal["image_folder"]
    path: str


class TFRecordSource(_FileSource):
    """TFRecord files of serialized tf.train.Examples."""

    must_exist: ClassVar[dict] = {"pattern": "glob"}
    file_fields: ClassVar[tuple] = tuple(must_exist)
    source: Literal["tfrecord"]
    pattern: str = Field(description="a glob such as data/train-*.tfrecord")


class DigitsSource(_Section):
    """scikit-learn's 8x8 handwritten digits, split into train and val by a seeded shuffle."""

    file_fields: ClassVar[tuple] = ()
    source: Literal["digits"]
    split: Literal[SPLITS] = "train"
    val_fraction: Fraction = 0.2
    seed: Int = 0


SOURCE_CLASSES = {c.model_fields["source"].annotation.__args__[0]: c for c in (
    ShapesSource, FacesSource, FiguresSource, SolidsSource, CocoSource, VocSource, PtsSource, BinvoxSource,
    ImageFolderSource, TFRecordSource, DigitsSource)}
SOURCES = tuple(SOURCE_CLASSES)
# Sources whose own `split` field selects a held-out part; `val: null` means that part.
SPLIT_SOURCES = ("shapes", "faces", "figures", "solids", "digits", "voc")

DataSource = Annotated[Union[ShapesSource, FacesSource, FiguresSource, SolidsSource, CocoSource, VocSource, PtsSource,
                             BinvoxSource, ImageFolderSource, TFRecordSource, DigitsSource],
                       Field(discriminator="source")]


class NormalizeStats(_Section):
    """Per-channel mean and standard deviation, in the 0..255 pixel scale."""

    mean: Annotated[list[Float], Field(min_length=1, max_length=4)]
    std: Annotated[list[PosFloat], Field(min_length=1, max_length=4)]

    @model_validator(mode="after")
    def _same_length(self):
        if len(self.mean) != len(self.std):
            raise FieldError(("std",), f"{self.std} has {len(self.std)} values; accepted: one per mean value "
                                       f"({len(self.mean)})")
        # Stats on the 0..1 scale would silently divide 0..255 pixels by ~0.2: a std under one grey level
        # is no real dataset's, so such values are refused rather than guessed at.
        if max(self.std) < 1.0:
            raise FieldError(("std",), f"{self.std} looks like the 0..1 scale; accepted: the 0..255 pixel scale, "
                                       f"e.g. ImageNet's mean [123.7, 116.3, 103.5], std [58.4, 57.1, 57.4]")
        return self


Normalize = Annotated[
    Union[Annotated[Literal[NORMALIZATIONS], Tag("named")], Annotated[NormalizeStats, Tag("stats")]],
    Discriminator(lambda v: "named" if isinstance(v, str) else "stats"),
]


def augmentation_table(injected=None):
    """Return {name: entry} of the augmentations a recipe may name (convforge.data.augment's table)."""
    table = injected
    if table is None:
        try:
            from convforge.data.augment import AUGMENTATIONS as table
        except ModuleNotFoundError as err:
            # Only the module's absence falls back; a bug inside it must surface.
            if err.name not in ("convforge.data", "convforge.data.augment"):
                raise
            table = AUGMENTATION_NAMES
    return dict(table) if isinstance(table, Mapping) else dict.fromkeys(table)


def augmentation_arguments(entry):
    """Return the keyword arguments an augmentation entry takes, or None when they cannot be known."""
    build = getattr(entry, "build", entry)
    if not callable(build):
        return None
    params = list(inspect.signature(build).parameters.values())
    if hasattr(entry, "build"):
        params = params[1:]  # data.augment's builders take the pipeline's context first
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is not p.VAR_POSITIONAL]


def augmentation_carries(name, entry):
    """Return the annotation kinds an augmentation carries (its entry's `carries`; with the fallback names,
    label mixers carry labels only and the others every kind)."""
    carries = getattr(entry, "carries", None)
    if carries is not None:
        return frozenset(carries)
    if name in CLASSIFICATION_ONLY_AUGMENTATIONS:
        return frozenset({"label"})
    return frozenset({"label", "boxes", "picture"})


class Augmentation(BaseModel):
    """One augmentation: its registered `name` and the keyword arguments of its builder.

    Extra keys are the builder's arguments, so they are checked against its signature (when the augmentation
    table gives one) rather than forbidden. `flip`, `{name: crop, zoom: 0.2}` and `{crop: {zoom: 0.2}}` are
    the same kind of entry.
    """

    model_config = ConfigDict(extra="allow")
    name: str

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data):
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and len(data) == 1 and "name" not in data:
            (name, kwargs), = data.items()
            if kwargs is None or isinstance(kwargs, dict):
                return {"name": name, **(kwargs or {})}
        return data

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo):
        table = augmentation_table((info.context or {}).get("augmentations"))
        if self.name not in table:
            raise FieldError(("name",), f"{self.name!r} is not an augmentation{close_matches(self.name, table)};"
                                        f" accepted: {_accepted(table)}")
        accepted = augmentation_arguments(table[self.name])
        for key in (self.model_extra or {}) if accepted is not None else ():
            if key not in accepted:
                raise FieldError((key,), f"{self.name} takes no argument {key!r}{close_matches(key, accepted)}; "
                                         f"accepted: {_accepted(accepted) or 'none'}")
        return self

    @property
    def kwargs(self):
        """The builder's keyword arguments (every key but `name`)."""
        return dict(self.model_extra or {})


class DataSection(_Section):
    """Where the images come from and how the tf.data pipeline treats them (see the module doc for `val`)."""

    train: DataSource
    val: Optional[DataSource] = Field(None, description="null: the train source's val split, if it has one")
    batch_size: PosInt = 32
    cache: Bool = True
    shuffle_buffer: NonNegInt = 1000
    normalize: Normalize = Field("imagenet", description="imagenet | unit | {mean: [...], std: [...]}")
    augment: list[Augmentation] = Field(default_factory=list)
    max_instances: PosInt = Field(100, description="objects per image that multi-instance targets are padded "
                                                   "(or cut) to")
    strict: Bool = Field(False, description="fail on unreadable or unlabeled examples instead of skipping")
    domain_b: Optional[DataSource] = Field(None, description="translation: the second domain's pictures (train "
                                                             "is the first, also spelled domain_a)")
    paired_val: Optional[DataSource] = Field(None, description="translation: the val pictures drawn in domain B, "
                                                               "one for one in the same order (the ground truth "
                                                               "PSNR is measured against; merged over train like "
                                                               "val, e.g. {path: ..., style: flat}); null: none")

    @model_validator(mode="before")
    @classmethod
    def _derive_val(cls, data):
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "domain_a" in data:
            # domain_a is train's name in a two-domain recipe; one of the two, not both.
            if "train" in data:
                raise FieldError(("domain_a",), "data.domain_a is data.train's other name; accepted: one of them")
            data["train"] = data.pop("domain_a")
        train, val = data.get("train"), data.get("val")
        if not isinstance(train, dict):
            return data
        source = train.get("source")
        if val is None:
            if source in SPLIT_SOURCES:
                data["val"] = {**train, "split": "val"}
        elif isinstance(val, dict) and val.get("source", source) == source:
            merged = {**train, **val}
            if "split" not in val and source in SPLIT_SOURCES:
                merged["split"] = "val"
            data["val"] = merged
        paired = data.get("paired_val")
        if isinstance(paired, dict) and paired.get("source", source) == source:
            # The val rule again: the same scenes as val, drawn otherwise (shapes' style: flat).
            merged = {**train, **paired}
            if "split" not in paired and source in SPLIT_SOURCES:
                merged["split"] = "val"
            data["paired_val"] = merged
        return data


# ---------------------------------------------------------------------------------------------------- train

def keras_optimizers():
    """Return {name: class name} of the optimizers keras.optimizers.get resolves by name (a table: no import)."""
    return {name: cls for name, (cls, _) in OPTIMIZERS.items()}


def optimizer_arguments(name):
    """Return {argument: default} of the constructor arguments a recipe may give a Keras optimizer."""
    return dict(OPTIMIZERS[name][1])


def _same_kind(value, default, key=""):
    """False when a value plainly cannot stand where the default stands (a string for a number, ...).

    Keras leaves its optional arguments (clipnorm, clipvalue, global_clipnorm, ema_overwrite_frequency,
    gradient_accumulation_steps, loss_scale_factor, ...) at None; every one of them takes a number, so a None
    default accepts a number or null and nothing else (a mapping there crashed Keras mid-training).
    """
    if isinstance(default, bool):
        return isinstance(value, bool)
    if default is None and key in LIST_ARGUMENTS:
        return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if isinstance(default, (int, float)) or default is None:
        return (value is None and default is None) or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if isinstance(default, str):
        return isinstance(value, str)
    return True


class OptimizerConfig(BaseModel):
    """A Keras optimizer by name; the other keys are its constructor arguments, checked against its signature."""

    model_config = ConfigDict(extra="allow")
    name: str = Field("adam", description="a name keras.optimizers.get resolves: sgd, adam, adamw, ...")
    learning_rate: Optional[PosFloat] = Field(
        None, description="the base rate, which a schedule shapes; null: the optimizer's own default")

    @field_validator("name")
    @classmethod
    def _keras_name(cls, value):
        table = keras_optimizers()
        key = value.lower()
        if key not in table:
            raise ValueError(f"{value!r} is not a Keras optimizer{close_matches(key, table)}; "
                             f"accepted: {_accepted(table)}")
        return key

    @model_validator(mode="after")
    def _arguments(self):
        accepted = optimizer_arguments(self.name)
        for key, value in (self.model_extra or {}).items():
            if key not in accepted:
                raise FieldError((key,), f"{self.name} takes no argument {key!r}{close_matches(key, accepted)}; "
                                         f"accepted: {_accepted(accepted)}")
            if not _same_kind(value, accepted[key], key):
                default = accepted[key]
                wanted = (f"a value like its default {default!r}" if default is not None else
                          "a list of layer names or null" if key in LIST_ARGUMENTS else "a number or null")
                raise FieldError((key,), f"{value!r} does not fit {self.name}'s {key}; accepted: {wanted}")
        if self.learning_rate is None:
            # Spelled out so the resolved recipe shows the rate that was used.
            self.learning_rate = float(accepted["learning_rate"])
        return self

    @property
    def kwargs(self):
        """The constructor arguments: learning_rate and every other key but `name`."""
        return {"learning_rate": self.learning_rate, **(self.model_extra or {})}


class ConstantSchedule(_Section):
    """The optimizer's learning_rate throughout."""

    name: Literal["constant"]


class StepSchedule(_Section):
    """Multiply the learning rate by `factor` at each boundary epoch."""

    name: Literal["step"]
    boundaries_epochs: Annotated[list[PosInt], Field(min_length=1)]
    factor: Annotated[float, Field(strict=True, gt=0, le=1)] = 0.1

    @field_validator("boundaries_epochs")
    @classmethod
    def _increasing(cls, value):
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"{value} is not increasing; accepted: epochs in increasing order")
        return value


class CosineSchedule(_Section):
    """Linear warm-up, then cosine decay to min_lr_ratio times the learning rate (Loshchilov & Hutter)."""

    name: Literal["cosine"]
    warmup_epochs: NonNegFloat = 0.0
    min_lr_ratio: Annotated[float, Field(strict=True, ge=0, le=1)] = 0.0


class OneCycleSchedule(_Section):
    """Smith's one-cycle policy: rise to max_lr over warmup_fraction of the steps, then anneal."""

    name: Literal["one_cycle"]
    warmup_fraction: Fraction = Field(0.3, description="also accepted as pct_start (PyTorch's name)")
    max_lr: Optional[PosFloat] = Field(None, description="null: the optimizer's learning_rate")

    @model_validator(mode="before")
    @classmethod
    def _pct_start(cls, data):
        if isinstance(data, dict) and "pct_start" in data:
            data = dict(data)
            if "warmup_fraction" in data:
                raise FieldError(("pct_start",), "'pct_start' is 'warmup_fraction' by another name; "
                                                 "accepted: one of them")
            data["warmup_fraction"] = data.pop("pct_start")
        return data


SCHEDULE_CLASSES = {c.model_fields["name"].annotation.__args__[0]: c for c in (
    ConstantSchedule, StepSchedule, CosineSchedule, OneCycleSchedule)}
SCHEDULES = tuple(SCHEDULE_CLASSES)
Schedule = Annotated[Union[ConstantSchedule, StepSchedule, CosineSchedule, OneCycleSchedule],
                     Field(discriminator="name")]


class EarlyStopping(_Section):
    """keras.callbacks.EarlyStopping's arguments."""

    monitor: str = "val_loss"
    patience: NonNegInt = 5
    mode: Literal["auto", "min", "max"] = "auto"
    min_delta: NonNegFloat = 0.0
    restore_best_weights: Bool = True


class AdversarialTraining(_Section):
    """Adversarial training: PGD examples against the model being trained replace a share of each batch."""

    attack: Literal["pgd"] = "pgd"
    eps: PosFloat = Field(..., description="perturbation bound on the 0..1 pixel scale (0.1: a tenth of it)")
    norm: Literal["linf", "l2"] = "linf"
    steps: PosInt = Field(7, description="PGD steps per training batch")
    step_size: Optional[PosFloat] = Field(None, description="null: eps / 4")
    mix: Annotated[float, Field(strict=True, gt=0, le=1)] = Field(
        1.0, description="share of each batch replaced by its PGD examples: 1 is Madry et al., 0.5 Kurakin et al.")
    eval_steps: PosInt = Field(20, description="PGD steps of the robust accuracy reported after training")


class TrainSection(_Section):
    """How long and how to fit: optimizer, schedule, regularization, precision and distribution."""

    epochs: PosInt = 10
    steps_per_epoch: Optional[PosInt] = Field(None, description="cap on batches per epoch; null: the whole set")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: Schedule = Field(default_factory=lambda: ConstantSchedule(name="constant"))
    label_smoothing: Annotated[float, Field(strict=True, ge=0, lt=1)] = 0.0
    early_stopping: Optional[EarlyStopping] = None
    precision: Literal[PRECISIONS] = "auto"
    distribution: Literal[DISTRIBUTIONS] = "auto"
    seed: Int = 0
    deterministic: Bool = Field(False, description="deterministic ops: reproducible, slower")
    aux_loss_weight: NonNegFloat = Field(0.3, description="weight of GoogLeNet's auxiliary losses")
    adversarial: Optional[AdversarialTraining] = Field(None, description="null: train on clean images only")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        # `optimizer: adam` and `schedule: cosine` stand for {name: ...}.
        if isinstance(data, dict):
            data = dict(data)
            for key in ("optimizer", "schedule"):
                if isinstance(data.get(key), str):
                    data[key] = {"name": data[key]}
        return data

    @model_validator(mode="after")
    def _within_epochs(self):
        schedule = self.schedule
        if isinstance(schedule, StepSchedule) and schedule.boundaries_epochs[-1] >= self.epochs:
            raise FieldError(("schedule", "boundaries_epochs"),
                             f"{schedule.boundaries_epochs} reaches past training; accepted: epochs below "
                             f"train.epochs ({self.epochs})")
        if isinstance(schedule, CosineSchedule) and schedule.warmup_epochs >= self.epochs:
            raise FieldError(("schedule", "warmup_epochs"),
                             f"{schedule.warmup_epochs} leaves no epoch to decay; accepted: less than "
                             f"train.epochs ({self.epochs})")
        return self


# --------------------------------------------------------------------------------------------------- export

Points = Annotated[float, Field(strict=True, ge=0, le=100)]


class ExportSection(_Section):
    """Which artifacts to write, where, and how the int8 one is calibrated and judged."""

    formats: list[Literal[EXPORT_FORMATS]] = Field(default_factory=lambda: ["saved_model", "tflite"])
    out_dir: Optional[str] = Field(None, description="null: saved_models/<name> (relative to the working "
                                                     "directory)")
    representative_size: PosInt = Field(200, description="training images (un-augmented) that calibrate int8")
    validation_size: PosInt = Field(1000, description="val images every artifact is scored on")
    int8_max_accuracy_drop: Points = Field(1.0, description="points of the task metric tflite_int8 may lose "
                                                            "against Keras on the val split")
    dynamic_max_accuracy_drop: Points = Field(1.0, description="the same for tflite_dynamic")
    fp16_max_accuracy_drop: Points = Field(0.5, description="the same for tflite_fp16")
    onnx_opset: Annotated[int, Field(strict=True, ge=7)] = 17
    int8_io: Literal["int8", "uint8"] = Field("int8", description="input/output type of tflite_int8 (uint8 for "
                                                                  "accelerators that want unsigned tensors)")

    def max_metric_drop(self):
        """{format: points of the task metric it may lose against Keras}, as convforge.export takes it."""
        return {name: getattr(self, row.drop_field) for name, row in _FORMAT_TABLE.items() if row.drop_field}

    @field_validator("formats")
    @classmethod
    def _unique(cls, value):
        seen = set()
        for i, fmt in enumerate(value):
            if fmt in seen:
                raise FieldError((i,), f"{fmt!r} is listed twice; accepted: each format once")
            seen.add(fmt)
        return value

    @field_validator("out_dir")
    @classmethod
    def _writable(cls, value):
        return value if value is None else _check_writable(value)


def _task_names():
    """The registered task names (the built-in ones when the registry cannot be imported)."""
    try:
        from convforge.tasks import task_names
    except ModuleNotFoundError as err:
        if err.name not in ("convforge.tasks",):
            raise
        return TASKS
    return task_names()


def _task_class(name):
    """The registered Task class of a name, or None when the registry cannot be imported."""
    try:
        from convforge.tasks import task_class
    except ModuleNotFoundError as err:
        if err.name not in ("convforge.tasks",):
            raise
        return None
    return task_class(name)


def _task_needs(name):
    """The annotation kinds a registered task's targets are made of (labels only when unknown)."""
    task = _task_class(name)
    return task.annotations if task is not None else frozenset({"label"})


def _pydantic_message(error, model):
    """One pydantic error of a task's head options as this schema words its own: what is wrong, what is
    accepted."""
    if error["type"] == "extra_forbidden":
        key = str(error["loc"][-1])
        fields = list(model.model_fields)
        return f"unknown field{close_matches(key, fields)}; accepted: {_accepted(fields)}"
    return f"{error['msg']} (got {error.get('input')!r})"


# ----------------------------------------------------------------------------------------------------- root

class Recipe(_Section):
    """A whole recipe: what to build, on which data, how to train it and what to export."""

    name: str = Field(description="names the run and export folders", json_schema_extra={
        "pattern": r"^[A-Za-z0-9_.-]+$"})
    base: Optional[str] = Field(None, description="a recipe this one overrides (path relative to this file); "
                                                  "load_recipe resolves it")
    task: str = Field("classification", description="a registered task: " + ", ".join(TASKS))
    head: dict[str, Any] = Field(default_factory=dict, description="the task's head and loss options "
                                                                   "(see the task's Options)")
    model: ModelSection
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    export: ExportSection = Field(default_factory=ExportSection)

    _source_path: Optional[Path] = PrivateAttr(None)
    _bases: tuple = PrivateAttr(())

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value):
        ok = value not in (".", "..") and value and all(c.isascii() and (c.isalnum() or c in "_.-") for c in value)
        if not ok:
            raise ValueError(f"{value!r} cannot name a folder; accepted: letters, digits, '_', '.' and '-'")
        return value

    @field_validator("task")
    @classmethod
    def _registered(cls, value):
        names = _task_names()
        if value not in names:
            raise ValueError(f"{value!r} is not a task{close_matches(value, names)}; accepted: {_accepted(names)}")
        return value

    @model_validator(mode="after")
    def _across_sections(self, info: ValidationInfo):
        task = _task_class(self.task)
        if task is not None:
            self._fits_domains(task)
            if task.architectures == ():
                self._own_networks()
            elif self.model.architecture is None:
                raise FieldError(("model", "architecture"), f"missing required field (a {self.task} model needs a "
                                                            f"backbone); accepted: a registered name, see `convforge models`")
            elif task.architectures is not None and self.model.architecture.lower() not in task.architectures:
                raise FieldError(("model", "architecture"), f"{self.model.architecture!r} does not serve "
                                                            f"{self.task}; accepted: {_accepted(task.architectures)}")
            self.head = {**task.head_defaults(self.model.architecture), **(self.head or {})}
            try:
                options = task.options_class(self.head)
                self.head = options.model_validate(self.head).model_dump(mode="json")
            except ValidationError as err:
                first = err.errors()[0]
                raise FieldError(("head", *first["loc"]), _pydantic_message(first, options)) from None
            if task.input_normalization is not None and self.data.normalize != task.input_normalization:
                raise FieldError(("data", "normalize"), f"{self.data.normalize!r} is not accepted: a {self.task} "
                                                        f"model reads and writes pixels on 0..1; accepted: "
                                                        f"{task.input_normalization!r}")
            if self.model.architecture is not None:
                self._fits_architecture(task(self.head))
            for i, fmt in enumerate(self.export.formats):
                if _FORMAT_TABLE[fmt].detectors_only and not task.ends_in_nms:
                    usable = [n for n, row in _FORMAT_TABLE.items() if not row.detectors_only]
                    raise FieldError(("export", "formats", i),
                                     f"{fmt!r} holds a detector's NMS, and a {self.task} model has none; accepted "
                                     f"for {self.task}: {_accepted(usable)}")
        needs = _task_needs(self.task)
        table = augmentation_table((info.context or {}).get("augmentations"))
        for i, aug in enumerate(self.data.augment):
            lost = sorted(needs - augmentation_carries(aug.name, table[aug.name]))
            if lost:
                usable = [n for n, entry in table.items() if needs <= augmentation_carries(n, entry)]
                carries = augmentation_carries(aug.name, table[aug.name])
                served = [n for n in _task_names() if _task_needs(n) <= carries] or ["no registered task"]
                raise FieldError(("data", "augment", i, "name"),
                                 f"{aug.name!r} serves {' and '.join(served)}, not {self.task}: it cannot carry "
                                 f"the {', '.join(lost)} that {self.task} needs; accepted for {self.task}: "
                                 f"{_accepted(usable)}")
        if self.train.adversarial is not None and task is not None and not task.trains_adversarially:
            able = [n for n in _task_names() if getattr(_task_class(n), "trains_adversarially", False)]
            raise FieldError(("train", "adversarial"), f"a {self.task} model has no class scores for PGD to "
                                                       f"climb; accepted for tasks: {_accepted(able)}")
        stop = self.train.early_stopping
        if stop is not None and stop.monitor.startswith("val_") and self.data.val is None:
            raise FieldError(("train", "early_stopping", "monitor"),
                             f"{stop.monitor!r} needs validation data, and data.val is not set (no val split "
                             f"for source {self.data.train.source!r}); accepted: a metric without val_, or "
                             f"set data.val")
        if self.export.out_dir is None:
            self.export.out_dir = os.path.join("saved_models", self.name)
        return self

    def _fits_domains(self, task):
        """Two-domain tasks (translation) take data.domain_b, and only they do."""
        if getattr(task, "domains", 1) == 2:
            if self.data.domain_b is None:
                raise FieldError(("data", "domain_b"), f"a {self.task} recipe learns between two domains; "
                                                       f"accepted: data.domain_a (or train) and data.domain_b")
            return
        for field in ("domain_b", "paired_val"):
            if getattr(self.data, field) is not None:
                raise FieldError(("data", field), f"data.{field} belongs to two-domain tasks, not {self.task}; "
                                                  f"accepted: leave it out")

    def _own_networks(self):
        """A task that builds its networks from head: names no backbone and needs the input size."""
        model = self.model
        if model.architecture is not None:
            raise FieldError(("model", "architecture"), f"a {self.task} recipe builds its networks from head:; "
                                                        f"accepted: leave model.architecture out")
        if model.input_shape is None:
            raise FieldError(("model", "input_shape"), f"a {self.task} recipe needs the picture size; accepted: "
                                                       f"[height, width, channels]")
        if model.options:
            key = next(iter(model.options))
            raise FieldError(("model", "options", key), f"{key!r}: a {self.task} recipe has no backbone to take "
                                                        f"options; accepted: its networks' options under head:")

    def _fits_architecture(self, task):
        """The backbone has the levels the task's head reads (task: the Task with this recipe's head options);
        classification-top options only where the task has that top."""
        from convforge.registry import get_spec, missing_levels_message

        spec = get_spec(self.model.architecture)
        message = missing_levels_message(spec.name, task.levels, self.model.options, who=f"the {task.name} head")
        if message:
            raise FieldError(("model", "architecture"), message)
        if not task.uses_classification_top:
            for key in self.model.options:
                if key in spec.top_option_names and key not in spec.backbone_option_names:
                    raise FieldError(("model", "options", key),
                                     f"{key!r} is an option of {spec.name}'s classification top, which the "
                                     f"{task.name} task does not use; accepted: "
                                     f"{_accepted(spec.backbone_option_names)} (its head's options go under head:)")

    @property
    def source_path(self):
        """The recipe file this was loaded from (None when built in Python)."""
        return self._source_path

    @property
    def bases(self):
        """The files it inherits from through `base:`, nearest first."""
        return self._bases

    def to_dict(self):
        """The resolved recipe as plain data: inheritance applied, defaults and val filled in, paths absolute."""
        return self.model_dump(mode="json", exclude={"base"})

    def to_yaml(self):
        """The resolved recipe as YAML, loadable again with load_recipe."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
