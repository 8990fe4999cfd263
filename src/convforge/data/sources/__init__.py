"""Dataset sources: each turns one on-disk (or embedded) layout into Records, ImageArrays or Examples."""
import inspect

from convforge.data.faces import load_faces
from convforge.data.figures import load_figures
from convforge.data.shapes import load_shapes
from convforge.data.solids import load_solids
from convforge.data.sources.binvox import binvox
from convforge.data.sources.coco import coco
from convforge.data.sources.digits import digits
from convforge.data.sources.folder import image_folder
from convforge.data.sources.pts import pts
from convforge.data.sources.tfrecord import tfrecord, write_tfrecord
from convforge.data.sources.voc import VOC_CLASSES, voc
from convforge.errors import DataError, close_matches

SOURCES = {"image_folder": image_folder, "coco": coco, "voc": voc, "tfrecord": tfrecord, "digits": digits,
           "shapes": load_shapes, "faces": load_faces, "figures": load_figures,
           "pts": pts, "solids": load_solids, "binvox": binvox}


def load_source(spec):
    """Call the source a recipe names: {"source": "coco", "annotations": ..., "images_root": ...}."""
    if isinstance(spec, str):
        spec = {"source": spec}
    spec = dict(spec)
    name = spec.pop("source", None)
    if name not in SOURCES:
        raise DataError(f"data source {name!r} is not one of {', '.join(SOURCES)}{close_matches(name, SOURCES)}")
    accepted = inspect.signature(SOURCES[name]).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    for key in spec:
        if key not in accepted and not takes_any:
            raise DataError(f"data source {name!r} has no argument {key!r}{close_matches(key, accepted)}; "
                            f"accepted: {', '.join(accepted)}")
    try:
        return SOURCES[name](**spec)
    except TypeError as exc:
        raise DataError(f"data source {name!r} cannot take {spec}: {exc}") from None


__all__ = ["SOURCES", "VOC_CLASSES", "binvox", "coco", "digits", "image_folder", "load_faces", "load_figures", "load_shapes",
           "load_solids", "load_source", "pts", "tfrecord", "voc", "write_tfrecord"]
