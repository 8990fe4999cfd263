"""convforge: classic convolutional networks for vision tasks, trained from one recipe, shipped verified."""
import os

from setuptools import find_packages, setup

# One TensorFlow per environment: the CPU wheel by default, the CUDA build when the user asks for it with
# CONVFORGE_TF=gpu at install time (`make install TF=gpu`). An extra cannot do this, because extras only add
# requirements and tensorflow-cpu + tensorflow would then both own the `tensorflow` package directory.
_TF_FLAVOURS = {
    "cpu": "tensorflow-cpu~=2.21.0",
    "gpu": "tensorflow[and-cuda]~=2.21.0",
}
_flavour = os.environ.get("CONVFORGE_TF", "cpu").strip().lower()
if _flavour not in _TF_FLAVOURS:
    raise SystemExit(f"CONVFORGE_TF={_flavour!r} is not a TensorFlow flavour; use one of {sorted(_TF_FLAVOURS)}")

setup(
    name="convforge",
    version="0.1.0",
    description="Classic CNN architectures and vision tasks on Keras 3 / TensorFlow, from YAML recipe to verified edge export",
    long_description=open(os.path.join(os.path.dirname(__file__), "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    python_requires=">=3.10",
    install_requires=[
        _TF_FLAVOURS[_flavour],
        "keras~=3.15.0",
        "numpy>=1.26,<3",
        "pyyaml~=6.0",
        "pydantic~=2.10",
        "pillow>=10",
        "matplotlib~=3.8",
        "scikit-learn~=1.9",
        "pycocotools~=2.0",
        "tensorboard~=2.21",
    ],
    extras_require={
        "test": [
            "pytest~=8.4",
            "pytest-timeout~=2.3",
            "jax[cpu]~=0.10.0",
        ],
        "dev": ["pytest~=8.4", "pytest-timeout~=2.3", "jax[cpu]~=0.10.0"],
    },
    entry_points={"console_scripts": ["convforge=convforge.cli:main"]},
)
