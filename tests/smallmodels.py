"""Small instances of the registered families, shared by the tests that build many architectures.

Each entry keeps every kind of block the family's variants are made of (basic/bottleneck blocks, groups, SE,
BN or not, the AlexNet conv table, the Inception module tables ...) with fewer repeats and narrower layers,
so a test exercises the same layers and converters in a fraction of the time.
"""
from convforge.registry import get_spec

SMALL = {
    "resnet": dict(depths=(1, 1, 1, 1), widths=(16, 32, 64, 128)),
    "densenet": dict(blocks=(1, 1, 1, 1), growth_rate=8, init_features=16),
    "vgg": dict(blocks=(1, 1, 1, 1, 1), widths=(8, 16, 32, 64, 64), fc_units=64),
    "alexnet": dict(fc_units=64),
    "mobilenet": dict(alpha=0.35),
    "googlenet": dict(width=0.25),
    "inception": dict(width=0.25),
}


def small_options(name):
    """The registered options of `name` with its family's shrinking options on top."""
    spec = get_spec(name)
    return {**spec.options, **SMALL.get(spec.family, {})}
