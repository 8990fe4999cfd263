"""convforge.data: datasets described once, decoded into records, parsed per task into tf.data pipelines.

Sources decode a layout into Records / ImageArrays / Examples (records.py); the pipeline's task parsers
turn those into training targets (pipeline.py); augmentations are named Keras layers (augment.py).
Names resolve lazily, so reading annotations does not import TensorFlow.

Examples:
    >>> from convforge import data
    >>> splits = data.ensure_shapes("/tmp/shapes", n=200)                       # doctest: +SKIP
    >>> train = data.coco(*splits["train"])                                    # doctest: +SKIP
    >>> ds = data.build_dataset(train, "localization", (64, 64, 3), 32, True,
    ...                         augment=["flip", "crop"], seed=0)              # doctest: +SKIP
"""
from convforge._api import lazy_names

_API = {
    "Records": "convforge.data.records",
    "ImageArrays": "convforge.data.records",
    "Examples": "convforge.data.records",
    "DataWarning": "convforge.data.records",
    "EXAMPLE_KEYS": "convforge.data.records",
    "image_folder": "convforge.data.sources.folder",
    "coco": "convforge.data.sources.coco",
    "voc": "convforge.data.sources.voc",
    "VOC_CLASSES": "convforge.data.sources.voc",
    "digits": "convforge.data.sources.digits",
    "tfrecord": "convforge.data.sources.tfrecord",
    "write_tfrecord": "convforge.data.sources.tfrecord",
    "SOURCES": "convforge.data.sources",
    "load_source": "convforge.data.sources",
    "generate_shapes": "convforge.data.shapes",
    "ensure_shapes": "convforge.data.shapes",
    "load_shapes": "convforge.data.shapes",
    "SHAPE_CLASSES": "convforge.data.shapes",
    "KEYPOINT_NAMES": "convforge.data.shapes",
    "generate_faces": "convforge.data.faces",
    "ensure_faces": "convforge.data.faces",
    "load_faces": "convforge.data.faces",
    "LANDMARK_NAMES": "convforge.data.faces",
    "generate_figures": "convforge.data.figures",
    "ensure_figures": "convforge.data.figures",
    "load_figures": "convforge.data.figures",
    "pts": "convforge.data.sources.pts",
    "generate_solids": "convforge.data.solids",
    "ensure_solids": "convforge.data.solids",
    "load_solids": "convforge.data.solids",
    "binvox": "convforge.data.sources.binvox",
    "read_binvox": "convforge.data.sources.binvox",
    "write_binvox": "convforge.data.sources.binvox",
    "build_dataset": "convforge.data.pipeline",
    "preprocessing": "convforge.data.pipeline",
    "AUGMENTATIONS": "convforge.data.augment",
    "check_augment": "convforge.data.augment",
}

__all__ = sorted(_API)


__getattr__ = lazy_names(__name__, _API)


def __dir__():
    return __all__
