"""What every source hands to the pipeline: Records (files + annotations), ImageArrays and Examples.

A source *decodes* a dataset's own layout into one of three shapes; the pipeline's task *parsers* turn any
of them into training targets (TF Model Garden's decoder / parser split):

- `Records`: a list of per-image dicts with every annotation kept, so detection, segmentation and keypoint
  tasks can reuse what classification and localization load today::

      {"image_path": str, "width": int, "height": int,
       "image_id": int | str,                   # optional: the dataset's own id (COCO id, VOC name)
       "label": int | None,                     # image-level class (classification); None when unknown
       "objects": [{"category_id": int,         # contiguous class id, index into class_names
                    "bbox": [x, y, w, h],       # pixels, COCO convention (top-left corner, size)
                    "area": float, "iscrowd": 0 | 1,
                    "segmentation": polygons | RLE dict,   # optional, COCO forms
                    "keypoints": [x, y, v, ...]}]}         # optional, COCO form

- `ImageArrays`: images already in memory (uint8, N x H x W x C) with integer labels.
- `Examples`: a tf.data.Dataset of decoded example dicts, e.g. read from TFRecord. The pipeline turns
  Records and ImageArrays into the same dicts before parsing, so one parser per task serves every source::

      {"image": uint8 (H, W, C),  "label": int32 (-1 when unknown),
       "boxes": float32 (N, 4) normalized [ymin, xmin, ymax, xmax],  "classes": int32 (N,),
       "is_crowd": bool (N,),  "segmentation": string (N,) COCO JSON ("" when none),
       "keypoints": float32 (N, K, 3) normalized x, y and visibility,  "source_id": string}

  Tasks that need masks get them rasterized from `segmentation` at the training size, and every per-object
  kind padded to `max_instances` (data.instances).

Images are checked here, when a source is built, so that the tf.data pipeline only ever sees files it can
decode: a failure inside a running input pipeline would end training, a skipped file costs one warning.
"""
import concurrent.futures
import dataclasses
import os
import warnings
from typing import Any, NamedTuple

from convforge.errors import DataError

# The containers tf.io.decode_image reads; PIL opens many more (TIFF, WebP, ...) that TF would fail on.
DECODABLE_FORMATS = ("PNG", "JPEG", "BMP", "GIF")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


EXAMPLE_KEYS = ("image", "label", "boxes", "classes", "is_crowd", "segmentation", "keypoints", "source_id")


class DataWarning(UserWarning):
    """Files or annotations a source skipped; one warning per source, listing them."""


@dataclasses.dataclass
class Records:
    """Decoded per-image records of a file-based dataset, with its class names and what was skipped."""

    records: list
    class_names: list
    skipped: list = dataclasses.field(default_factory=list)  # (path, reason) pairs
    source: str = ""  # e.g. "coco(/data/instances_val.json)", used in messages
    category_ids: list | None = None  # the dataset's own id for each contiguous class id (COCO)
    keypoint_names: list | None = None
    # The COCO JSON these records are all of (nothing skipped), which evaluation scores against; None otherwise.
    annotations_file: str | None = None

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, index):
        if isinstance(index, slice):
            # A part no longer covers its whole annotation file.
            return dataclasses.replace(self, records=self.records[index], annotations_file=None)
        return self.records[index]

    @property
    def num_classes(self):
        """The number of classes (length of class_names)."""
        return len(self.class_names)


class ImageArrays(NamedTuple):
    """An in-memory image set: uint8 images (N, H, W, C), int64 labels (N,), class names and source ids."""

    images: Any
    labels: Any
    class_names: list
    source: str = ""
    ids: Any = None  # each image's position in the full source, to tell splits apart


@dataclasses.dataclass
class Examples:
    """A tf.data.Dataset of decoded example dicts (EXAMPLE_KEYS) with the class names if known."""

    dataset: Any
    class_names: list | None = None
    source: str = ""
    keypoint_names: list | None = None

    @property
    def num_classes(self):
        """The number of classes, or None when the source carries no class list."""
        return None if self.class_names is None else len(self.class_names)


def require_path(path, what, source):
    """Return the absolute path of an existing file or folder, or raise DataError naming it."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(path):
        raise DataError(f"{what} {path} of {source} does not exist; pass the path of an existing {what}")
    return path


def resolve_inside(root, relative):
    """Return the real path of `relative` under `root`, or None when it is absolute or escapes the root."""
    if not relative or os.path.isabs(relative):
        return None
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, path]) != root:
        return None
    return path


def inspect_image(path):
    """Return (width, height) of a decodable image file, or a string saying why it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            size, fmt = image.size, image.format
            # verify() walks the file's chunks (CRCs for PNG) without decoding pixels, so it stays cheap.
            image.verify()
    except FileNotFoundError:
        return "file not found"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # A header claiming 60000x60000 is a decompression bomb: skipped and counted like any corrupt file.
        return f"unreadable image ({type(exc).__name__}: {exc})".rstrip()
    if fmt not in DECODABLE_FORMATS:
        return f"format {fmt} cannot be decoded by TensorFlow (accepted: {', '.join(DECODABLE_FORMATS)})"
    if fmt == "JPEG" and not _has_jpeg_end(path):
        return "truncated JPEG (no end-of-image marker)"
    return size


def _has_jpeg_end(path, tail=1024):
    """Whether a JPEG's last bytes hold its end-of-image marker; verify() does not look for it."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - tail, 0))
        return b"\xff\xd9" in f.read()


def inspect_images(paths, workers=8):
    """inspect_image over many files, with threads because the work is mostly waiting on the disk."""
    paths = list(paths)
    if len(paths) < 64:
        return [inspect_image(p) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(inspect_image, paths, chunksize=32))


class Skips:
    """Collects skipped files for one source: raises at once under strict, otherwise warns once at the end."""

    def __init__(self, source, strict):
        self.source = source
        self.strict = strict
        self.items = []

    def add(self, path, reason):
        """Record one skipped file or annotation (or raise DataError under strict)."""
        if self.strict:
            raise DataError(f"{path} in {self.source} was rejected: {reason}; fix or remove it, "
                            f"or pass strict=False to skip such files with a warning")
        self.items.append((str(path), reason))

    def finish(self, records, class_names, **extra):
        """Warn once about what was skipped, refuse an empty result, and return the Records."""
        if self.items:
            shown = "; ".join(f"{p}: {r}" for p, r in self.items[:10])
            more = f"; and {len(self.items) - 10} more" if len(self.items) > 10 else ""
            warnings.warn(f"{self.source} skipped {len(self.items)} file(s) or annotation(s): {shown}{more}",
                          DataWarning, stacklevel=3)
        if not records:
            raise DataError(f"{self.source} has no usable images ({len(self.items)} skipped); "
                            f"expected at least one readable image with its annotations")
        return Records(records, list(class_names), self.items, self.source, **extra)


def images_with_sidecars(root, suffix, check, skips):
    """(image path, sidecar path, parsed sidecar) for every image under `root` (searched recursively, hidden
    entries left out) that has a file of the same stem ending in `suffix` beside it which `check(path)` parses;
    the others are skipped (`skips`) with the reason."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            if file.startswith(".") or not file.lower().endswith(IMAGE_EXTENSIONS):
                continue
            image = os.path.join(folder, file)
            sidecar = os.path.splitext(image)[0] + suffix
            if not os.path.isfile(sidecar):
                skips.add(image, f"has no {os.path.basename(sidecar)} beside it")
                continue
            try:
                parsed = check(sidecar)
            except (ValueError, OSError) as exc:
                skips.add(sidecar, f"is not a {suffix} file ({exc})")
                continue
            found.append((image, sidecar, parsed))
    return found


def largest_object(objects):
    """Return the non-crowd object with the largest box area, or None when there is none."""
    candidates = [o for o in objects if not o.get("iscrowd")]
    if not candidates:
        return None
    return max(candidates, key=lambda o: o["bbox"][2] * o["bbox"][3])
