"""The model registry: every registered name with its family's builder, its row of options and the published
figures it is tested against, as plain data.

Builders are named by path ("convforge.backbones.resnet:build_resnet") and imported on first use, and the options
a builder accepts are read from its source without importing it, so validating a recipe, listing names or
printing the recipe schema never loads TensorFlow. Variants are rows: ResNet-18 and ResNeXt-101 are two rows of
one builder.
"""
import ast
import dataclasses
import fnmatch
import functools
import importlib
import importlib.util
import os

from convforge.errors import ModelError, close_matches


# Level Ck sits at stride 2**k wherever an architecture has it.
LEVELS_C1_C5 = (("C1", 2), ("C2", 4), ("C3", 8), ("C4", 16), ("C5", 32))
# Arguments build_backbone passes itself (or the tensor a top is put on), never options of a recipe.
_SET_BY_BUILD = ("x", "input_shape", "num_classes", "name")


@dataclasses.dataclass(frozen=True)
class Reference:
    """A published parameter count, the convention it counts in, and where it comes from.

    count: "trainable" counts what PyTorch's parameters() counts (BN gamma/beta, not its running statistics);
    "total" is Keras' count_params() (BN moving mean/variance included). `options` are builder options under
    which the figure holds when they differ from the registered row (e.g. keras.applications' ResNet layout).
    """

    params: int
    count: str
    source: str
    options: dict = dataclasses.field(default_factory=dict)
    input_shape: tuple = (224, 224, 3)
    num_classes: int = 1000


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder (by path), its row of options and what it is measured against."""

    name: str
    family: str
    builder_path: str  # "module:function"
    options: dict
    paper: str
    default_input_shape: tuple = (224, 224, 3)
    min_input_size: int = 32
    references: tuple = ()
    macs: float | None = None  # published multiply-accumulates at default_input_shape, for a sanity check
    notes: str = ""
    # The classification top (a key of heads.classification.TOPS), its options in this architecture, and the
    # layers auxiliary classifiers read (GoogLeNet's), used with the option aux_logits=True.
    top: str = "gap"
    top_options: dict = dataclasses.field(default_factory=dict)
    aux_taps: tuple = ()
    # The named feature levels ((name, stride in input pixels), ...) as the row's options build them, and the
    # options that change them: {option: {value: levels}} (ResNet's small-image stem halves every stride).
    levels: tuple = LEVELS_C1_C5
    levels_with: dict = dataclasses.field(default_factory=dict)

    @property
    def builder(self):
        """The builder function (imports its family module, and with it Keras)."""
        module, function = self.builder_path.split(":")
        return getattr(importlib.import_module(module), function)

    @property
    def option_names(self):
        """Every option a model of this name takes: its builder's and its classification top's (no import)."""
        return self.backbone_option_names + self.top_option_names

    @property
    def backbone_option_names(self):
        """The keyword arguments the backbone builder takes, read from its source."""
        return tuple(p for p in builder_parameters(self.builder_path) if p not in _SET_BY_BUILD)

    @property
    def top_option_names(self):
        """The options of the classification top (heads.classification), read from its source."""
        names = builder_parameters(f"convforge.heads.classification:{self.top}_top")
        return tuple(p for p in names if p not in _SET_BY_BUILD) + (("aux_logits",) if self.aux_taps else ())

    def split_options(self, options):
        """Split options (over the row's defaults) into (backbone builder's, classification top's)."""
        backbone, top = dict(self.options), dict(self.top_options)
        for key, value in options.items():
            (top if key in self.top_option_names else backbone)[key] = value
        return backbone, top

    def feature_levels(self, options=None):
        """{level: stride} of the backbone built with these options (over the row's), without building it."""
        merged = {**self.options, **(options or {})}
        levels = dict(self.levels)
        for option, variants in self.levels_with.items():
            if merged.get(option) in variants:
                levels = dict(variants[merged[option]])
                break
        if merged.get("output_stride"):
            # Stages past a dilated backbone's output stride keep it (ResNet's output_stride).
            levels = {name: min(stride, merged["output_stride"]) for name, stride in levels.items()}
        return levels

    def missing_levels(self, needed, options=None):
        """The levels of `needed` this backbone lacks, in order."""
        have = self.feature_levels(options)
        return [lv for lv in needed if lv not in have]

    @property
    def num_classes(self):
        """The class count the model is published with (1000 for ImageNet models, 10 for LeNet-5)."""
        return self.references[0].num_classes if self.references else 1000


@functools.cache
def builder_parameters(builder_path):
    """The parameter names of a builder function, parsed from its module's source file without importing it."""
    module, function = builder_path.split(":")
    package, _, leaf = module.rpartition(".")
    # find_spec of the leaf would import the parent package; locating the file under it does not.
    parent = importlib.util.find_spec("convforge").submodule_search_locations[0]
    path = os.path.join(parent, *package.split(".")[1:], f"{leaf}.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            args = node.args
            return tuple(a.arg for a in args.posonlyargs + args.args + args.kwonlyargs)
    raise ModelError(f"builder {builder_path} is not defined in {path}")


def missing_levels_message(name, needed, options=None, who="this head"):
    """One line naming the backbone, its levels and those of `needed` it lacks; None when it has them all."""
    spec = get_spec(name)
    missing = spec.missing_levels(needed, options)
    if not missing:
        return None
    have = ", ".join(f"{lv} (stride {s})" for lv, s in spec.feature_levels(options).items())
    return (f"{spec.name} has feature levels {have}; {who} needs {', '.join(needed)}, and "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")


def require_levels(name, needed, options=None, who="this head"):
    """Raise ModelError (missing_levels_message) when backbone `name` lacks any of the levels `needed`."""
    message = missing_levels_message(name, needed, options, who)
    if message:
        raise ModelError(message)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec):
    """Add a ModelSpec to the registry; a name may be registered once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(pattern="*"):
    """Return the sorted registered names matching a shell-style pattern such as 'resnet*'."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern.lower()))


def get_spec(name):
    """Return the ModelSpec of a registered name, or raise ModelError listing close matches."""
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ModelError(
            f"unknown architecture {name!r}{close_matches(key, _REGISTRY)}; "
            f"registered: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[key]


# ----------------------------------------------------------------------------------------------- the table

def _builder(family, function):
    return f"convforge.backbones.{family}:{function}"


register(ModelSpec(
    name="lenet5", family="lenet", builder_path=_builder("lenet", "build_lenet"), options={},
    paper="LeCun et al., Gradient-based learning applied to document recognition, Proc. IEEE 1998",
    default_input_shape=(32, 32, 1), min_input_size=32,
    top="fc", top_options=dict(fc_units=(84,), fc_activation="tanh", dropout=0.0),
    levels=(("C1", 2), ("C2", 4)),  # C3 and up would need a map smaller than 1x1 at LeNet's 32 px
    references=(Reference(61_706, "total", "LeNet-5 paper layout, full C3", input_shape=(32, 32, 1),
                          num_classes=10),),
    macs=0.416e6,
))

# AlexNet conv layers: (filters, kernel, stride, padding, groups, LRN after, max-pool after).
_ALEXNET_TORCHVISION = ((64, 11, 4, 2, 1, False, True), (192, 5, 1, 2, 1, False, True),
                        (384, 3, 1, 1, 1, False, False), (256, 3, 1, 1, 1, False, False),
                        (256, 3, 1, 1, 1, False, True))
# The paper's two-GPU split survives as groups=2 on conv2, conv4 and conv5 (they saw only their own GPU's half).
_ALEXNET_PAPER = ((96, 11, 4, 0, 1, True, True), (256, 5, 1, 2, 2, True, True), (384, 3, 1, 1, 1, False, False),
                  (384, 3, 1, 1, 2, False, False), (256, 3, 1, 1, 2, False, True))
# conv1's stride 4 skips C1.
_ALEXNET_LEVELS = (("C2", 4), ("C3", 8), ("C4", 16), ("C5", 32))
_ALEXNET_REF = "Krizhevsky, Sutskever & Hinton, ImageNet classification with deep CNNs, NeurIPS 2012"
register(ModelSpec(
    name="alexnet", family="alexnet", builder_path=_builder("alexnet", "build_alexnet"),
    options=dict(convs=_ALEXNET_TORCHVISION), paper=_ALEXNET_REF, min_input_size=95,
    top="fc", top_options=dict(dropout_first=True, adaptive_pool=(6, 6)), levels=_ALEXNET_LEVELS,
    references=(Reference(61_100_840, "total", "torchvision"),), macs=0.714e9,
    notes="torchvision's single-GPU variant (64/192/384/256/256 filters, no LRN)",
))
register(ModelSpec(
    name="alexnet_original", family="alexnet", builder_path=_builder("alexnet", "build_alexnet"),
    options=dict(convs=_ALEXNET_PAPER), paper=_ALEXNET_REF, default_input_shape=(227, 227, 3),
    top="fc", top_options=dict(dropout_first=True), levels=_ALEXNET_LEVELS,
    min_input_size=67,
    references=(Reference(60_965_224, "total", "Caffe bvlc_alexnet", input_shape=(227, 227, 3)),),
    notes="the paper's layout: 96/256/384/384/256 filters, LRN after conv1-2, groups=2 for the two-GPU split",
))

_VGG = "Simonyan & Zisserman, Very deep convolutional networks for large-scale image recognition, ICLR 2015"
# name: convs per block, torchvision params (no BN), torchvision params (BN, trainable), published GMACs
for _name, (_blocks, _plain, _bn, _gmacs) in {
    "vgg11": ((1, 1, 2, 2, 2), 132_863_336, 132_868_840, 7.61),
    "vgg13": ((2, 2, 2, 2, 2), 133_047_848, 133_053_736, 11.31),
    "vgg16": ((2, 2, 3, 3, 3), 138_357_544, 138_365_992, 15.47),
    "vgg19": ((2, 2, 4, 4, 4), 143_667_240, 143_678_248, 19.63),
}.items():
    _refs = (Reference(_plain, "total", "torchvision"),)
    if _name in ("vgg16", "vgg19"):
        _refs += (Reference(_plain, "total", "keras.applications"),)
    register(ModelSpec(name=_name, family="vgg", builder_path=_builder("vgg", "build_vgg"),
                       options=dict(blocks=_blocks), paper=_VGG, references=_refs, macs=_gmacs * 1e9, top="fc"))
    register(ModelSpec(name=f"{_name}_bn", family="vgg", builder_path=_builder("vgg", "build_vgg"),
                       options=dict(blocks=_blocks, batch_norm=True), paper=_VGG, top="fc",
                       references=(Reference(_bn, "trainable", "torchvision"),), macs=_gmacs * 1e9))

# UNet's contracting path: two 3x3 conv + ReLU per level, 64 to 1024 filters, four 2x2 max-pools; BN after each
# conv as modern UNets have it (batch_norm=False is the paper's). Its weights and biases, from the paper's Fig. 1
# (3x3 convs, 'same' padding changes no count): 18,843,200.
register(ModelSpec(
    name="unet", family="unet", builder_path=_builder("vgg", "build_vgg"),
    options=dict(blocks=(2, 2, 2, 2, 2), widths=(64, 128, 256, 512, 1024), batch_norm=True, last_pool=False),
    paper="Ronneberger, Fischer & Brox, U-Net: convolutional networks for biomedical image segmentation, "
          "MICCAI 2015",
    levels=(("C0", 1), ("C1", 2), ("C2", 4), ("C3", 8), ("C4", 16)),
    references=(Reference(18_843_200, "total", "the paper's Fig. 1 (contracting path, no BN)",
                          options={"batch_norm": False, "include_top": False}),),
    notes="the encoder of UNet; the segmentation task's unet decoder reads every level, C0 included",
))

register(ModelSpec(
    name="googlenet", family="googlenet", builder_path=_builder("googlenet", "build_googlenet"), options={},
    paper="Szegedy et al., Going deeper with convolutions, CVPR 2015",
    references=(Reference(6_624_904, "trainable", "torchvision (aux_logits=False)"),
                Reference(13_004_888, "trainable", "torchvision (aux_logits=True)", options={"aux_logits": True})),
    min_input_size=31, macs=1.50e9, top_options=dict(dropout=0.2), aux_taps=("inception4a", "inception4d"),
    notes="torchvision layout (BN after every conv, 3x3 in the '5x5' branch); branch3_kernel=5 gives the paper's",
))
register(ModelSpec(
    name="inception_v3", family="inception", builder_path=_builder("inception", "build_inception_v3"), options={},
    paper="Szegedy et al., Rethinking the Inception architecture for computer vision, CVPR 2016",
    default_input_shape=(299, 299, 3), min_input_size=75,
    references=(Reference(23_851_784, "total", "keras.applications", input_shape=(299, 299, 3)),),
    macs=5.71e9, notes="keras.applications layout, no auxiliary head",
))

# The small-image stem (one 3x3/1 conv, no max-pool) keeps stage 1 at full size: every stride is a quarter,
# so C1 and C2 are both at stride 1 and C5 at 8 (names kept: they are still the outputs of the same stages).
_CIFAR_STEM_LEVELS = (("C1", 1), ("C2", 1), ("C3", 2), ("C4", 4), ("C5", 8))
_KERAS_STYLE = dict(stride_in_1x1=True, conv_bias=True, bn_epsilon=1.001e-5)
_HE = "He et al., Deep residual learning for image recognition, CVPR 2016"
_XIE = "Xie et al., Aggregated residual transformations for deep neural networks, CVPR 2017"
_HU = "Hu et al., Squeeze-and-excitation networks, CVPR 2018"
# name: options, paper, references, published GMACs
for _name, (_options, _paper, _refs, _gmacs) in {
    "resnet18": (dict(block="basic", depths=(2, 2, 2, 2)), _HE,
                 (Reference(11_689_512, "trainable", "torchvision"),), 1.81),
    "resnet34": (dict(block="basic", depths=(3, 4, 6, 3)), _HE,
                 (Reference(21_797_672, "trainable", "torchvision"),), 3.66),
    "resnet50": (dict(depths=(3, 4, 6, 3)), _HE,
                 (Reference(25_557_032, "trainable", "torchvision"),
                  Reference(25_636_712, "total", "keras.applications", options=_KERAS_STYLE)), 4.09),
    "resnet101": (dict(depths=(3, 4, 23, 3)), _HE,
                  (Reference(44_549_160, "trainable", "torchvision"),
                   Reference(44_707_176, "total", "keras.applications", options=_KERAS_STYLE)), 7.80),
    "resnet152": (dict(depths=(3, 8, 36, 3)), _HE,
                  (Reference(60_192_808, "trainable", "torchvision"),
                   Reference(60_419_944, "total", "keras.applications", options=_KERAS_STYLE)), 11.51),
    "resnext50_32x4d": (dict(depths=(3, 4, 6, 3), groups=32, base_width=4), _XIE,
                        (Reference(25_028_904, "trainable", "torchvision"),), 4.23),
    "resnext101_32x8d": (dict(depths=(3, 4, 23, 3), groups=32, base_width=8), _XIE,
                         (Reference(88_791_336, "trainable", "torchvision"),), 16.41),
    "se_resnet50": (dict(depths=(3, 4, 6, 3), se_ratio=16), _HU,
                    (Reference(28_088_024, "trainable", "timm seresnet50 / Hu et al."),), 4.09),
}.items():
    register(ModelSpec(name=_name, family="resnet", builder_path=_builder("resnet", "build_resnet"),
                       options=_options, paper=_paper, references=_refs, macs=_gmacs * 1e9,
                       levels_with={"stem": {"cifar": _CIFAR_STEM_LEVELS}}))

_HUANG = "Huang et al., Densely connected convolutional networks, CVPR 2017"
# name: options, torchvision trainable params, keras.applications total params (None: not in keras), GMACs
for _name, (_options, _tv, _keras, _gmacs) in {
    "densenet121": (dict(blocks=(6, 12, 24, 16)), 7_978_856, 8_062_504, 2.83),
    "densenet169": (dict(blocks=(6, 12, 32, 32)), 14_149_480, 14_307_880, 3.36),
    "densenet201": (dict(blocks=(6, 12, 48, 32)), 20_013_928, 20_242_984, 4.29),
    "densenet161": (dict(blocks=(6, 12, 36, 24), growth_rate=48, init_features=96), 28_681_000, None, 7.73),
}.items():
    _refs = (Reference(_tv, "trainable", "torchvision"),)
    if _keras:
        _refs += (Reference(_keras, "total", "keras.applications"),)
    register(ModelSpec(name=_name, family="densenet", builder_path=_builder("densenet", "build_densenet"),
                       options=_options, paper=_HUANG, min_input_size=29, references=_refs, macs=_gmacs * 1e9))

_IANDOLA = "Iandola et al., SqueezeNet: AlexNet-level accuracy with 50x fewer parameters, arXiv 1602.07360"
_FIRE = {1: (16, 64, 64), 2: (32, 128, 128), 3: (48, 192, 192), 4: (64, 256, 256)}  # squeeze, expand 1x1, 3x3
for _name, (_options, _params, _gmacs) in {
    "squeezenet1_0": (dict(stem=(96, 7), layout=("pool", _FIRE[1], _FIRE[1], _FIRE[2], "pool", _FIRE[2], _FIRE[3],
                                                 _FIRE[3], _FIRE[4], "pool", _FIRE[4])), 1_248_424, 0.82),
    "squeezenet1_1": (dict(stem=(64, 3), layout=("pool", _FIRE[1], _FIRE[1], "pool", _FIRE[2], _FIRE[2], "pool",
                                                 _FIRE[3], _FIRE[3], _FIRE[4], _FIRE[4])), 1_235_496, 0.35),
}.items():
    register(ModelSpec(name=_name, family="squeezenet", builder_path=_builder("squeezenet", "build_squeezenet"),
                       options=_options, paper=_IANDOLA, min_input_size=29 if _name == "squeezenet1_0" else 25,
                       top="conv", levels=LEVELS_C1_C5[:4],  # the last fire module sits at stride 16: no C5
                       references=(Reference(_params, "total", "torchvision"),), macs=_gmacs * 1e9))

register(ModelSpec(
    name="mobilenet_v2", family="mobilenet", builder_path=_builder("mobilenet", "build_mobilenet_v2"), options={},
    paper="Sandler et al., MobileNetV2: inverted residuals and linear bottlenecks, CVPR 2018",
    references=(Reference(3_504_872, "trainable", "torchvision"),
                Reference(3_538_984, "total", "keras.applications")),
    macs=0.30e9, top_options=dict(dropout=0.2),
))
