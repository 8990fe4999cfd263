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
    package_data={"convforge.bench": ["model_table.json"]},
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
        # R-CNN's selective search starts from Felzenszwalb's segmentation (skimage.segmentation.felzenszwalb).
        "scikit-image~=0.26",
        "tensorboard~=2.21",
        # Export and its verification (convforge.export). tf2onnx 1.17.0 declares only lower bounds
        # (numpy>=1.23.5, protobuf>=3.20, onnx>=1.14), so it installs beside TF 2.21's numpy 2.x / protobuf 7
        # without --no-deps and changes none of tensorflow-cpu, keras, numpy, protobuf or ml_dtypes. Its one
        # numpy-2 break (np.product) sits in the >2 GB external-data path, which convforge does not use; the
        # grouped-conv XLA call it cannot see is handled in export/onnx.py. LiteRT runs the .tflite files
        # (tf.lite.Interpreter is deprecated); neither it nor tensorflow-cpu ships the Flex delegate.
        "tf2onnx~=1.17.0",
        "onnx~=1.23",
        "onnxruntime~=1.30",
        "ai-edge-litert~=2.3",
    ],
    extras_require={
        "test": [
            "pytest~=8.4",
            "pytest-timeout~=2.3",
            "pytest-xdist~=3.8",
            "jax[cpu]~=0.10.0",
        ],
        "dev": ["pytest~=8.4", "pytest-timeout~=2.3", "pytest-xdist~=3.8", "jax[cpu]~=0.10.0"],
    },
    entry_points={"console_scripts": ["convforge=convforge.cli:main"]},
)
