"""The model registry: each name maps to a family builder, the options of its row, and published figures."""
import dataclasses
import fnmatch
import importlib
from typing import Callable

from convforge.errors import ModelError, close_matches


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
    """A registered architecture: its builder, its row of options and what it is measured against."""

    name: str
    family: str
    builder: Callable
    options: dict
    paper: str
    default_input_shape: tuple = (224, 224, 3)
    min_input_size: int = 32
    references: tuple = ()
    macs: float | None = None  # published multiply-accumulates at default_input_shape, for a sanity check
    notes: str = ""

    @property
    def num_classes(self):
        """The class count the model is published with (1000 for ImageNet models, 10 for LeNet-5)."""
        return self.references[0].num_classes if self.references else 1000


_REGISTRY: dict[str, ModelSpec] = {}
_FAMILY_MODULES = ("lenet", "alexnet", "vgg", "googlenet", "inception", "resnet", "densenet", "squeezenet",
                   "mobilenet")


def register(spec):
    """Add a ModelSpec to the registry; a name may be registered once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_families():
    """Import every backbone family so that their variant tables register themselves."""
    for module in _FAMILY_MODULES:
        importlib.import_module(f"convforge.backbones.{module}")


def list_models(pattern="*"):
    """Return the sorted registered names matching a shell-style pattern such as 'resnet*'."""
    _load_families()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern.lower()))


def get_spec(name):
    """Return the ModelSpec of a registered name, or raise ModelError listing close matches."""
    _load_families()
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ModelError(
            f"unknown architecture {name!r}{close_matches(key, _REGISTRY)}; "
            f"registered: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[key]
