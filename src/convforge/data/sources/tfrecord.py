"""tfrecord: sharded TFRecord files of tf.train.Example protos, and the writer that makes them.

Feature spec (one Example per image; the object lists are parallel, one entry per object):

    image/encoded               bytes    the PNG or JPEG file as stored (other formats are re-encoded as PNG)
    image/format                bytes    b"png" or b"jpeg"
    image/height, image/width   int64    pixel size of the encoded image
    image/source_id             bytes    the record's image_id (COCO/VOC) or file path, for matching results
    image/class/label           int64    image-level class id, -1 when unknown
    image/object/bbox/xmin      float[]  box corners normalized to 0..1 of width / height
    image/object/bbox/ymin      float[]
    image/object/bbox/xmax      float[]
    image/object/bbox/ymax      float[]
    image/object/class/label    int64[]  contiguous class ids
    image/object/is_crowd       int64[]  1 for crowd / difficult objects (optional, default 0)
    image/object/segmentation   bytes[]  each object's COCO segmentation (polygons or RLE) as JSON, b"" when
                                         it has none (optional); rasterized at the training size when read
    image/object/keypoints      float[]  K x (x, y, v) per object, x and y normalized to 0..1 (optional)

Shards are named `<prefix>-00000-of-00004.tfrecord`; the class names go one per line into `classes.txt`
in the same folder, and the keypoint names (which give K and the left/right flip pairs) into
`keypoints.txt`. Because the images travel inside the records, `tfrecord()` does not return Records
(which point at files) but `Examples`: a tf.data.Dataset of decoded example dicts, the same dicts the
pipeline makes from Records (see records.EXAMPLE_KEYS), plus the class and keypoint names.
"""
import io
import os
import uuid

import numpy as np

from convforge.data.instances import keypoints_array, segmentation_text
from convforge.data.records import Examples, Records
from convforge.errors import DataError

_SUFFIX = ".tfrecord"
CLASSES_FILE = "classes.txt"
KEYPOINTS_FILE = "keypoints.txt"


def _encoded(path):
    """The image file's bytes and format, re-encoding anything but PNG/JPEG as PNG."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data, b"png"
    if data.startswith(b"\xff\xd8"):
        return data, b"jpeg"
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue(), b"png"


def _example(record, num_keypoints=0):
    """One record as a serialized tf.train.Example following the module's feature spec."""
    import tensorflow as tf

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))

    def raw(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    data, fmt = _encoded(record["image_path"])
    w, h = record["width"], record["height"]
    objects = record.get("objects", [])
    boxes = np.array([o["bbox"] for o in objects], np.float64).reshape(-1, 4)
    label = record.get("label")
    feature = {
        "image/encoded": raw(data),
        "image/format": raw(fmt),
        "image/height": ints([h]),
        "image/width": ints([w]),
        "image/source_id": raw(str(record.get("image_id", record["image_path"])).encode()),
        "image/class/label": ints([-1 if label is None else label]),
        "image/object/bbox/xmin": floats(boxes[:, 0] / w),
        "image/object/bbox/ymin": floats(boxes[:, 1] / h),
        "image/object/bbox/xmax": floats((boxes[:, 0] + boxes[:, 2]) / w),
        "image/object/bbox/ymax": floats((boxes[:, 1] + boxes[:, 3]) / h),
        "image/object/class/label": ints([o["category_id"] for o in objects]),
        "image/object/is_crowd": ints([o.get("iscrowd", 0) for o in objects]),
        "image/object/segmentation": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[segmentation_text(o).encode() for o in objects])),
        "image/object/keypoints": floats(np.concatenate(
            [keypoints_array(o, w, h, num_keypoints).reshape(-1) for o in objects] or [np.zeros(0)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_names(out_prefix, num_shards):
    """The file names write_tfrecord gives to `num_shards` shards of `out_prefix`."""
    return [f"{out_prefix}-{i:05d}-of-{num_shards:05d}{_SUFFIX}" for i in range(num_shards)]


def write_tfrecord(records, out_prefix, num_shards=1):
    """Write Records into `num_shards` TFRecord shards (consecutive slices) and classes.txt; return the paths.

    Files are written under temporary names and renamed only when every shard is complete, so a crash never
    leaves a partial dataset that looks whole.

    Examples:
        >>> write_tfrecord(coco("instances_train.json", "images/train"), "tfr/train", 4)  # doctest: +SKIP
        ['tfr/train-00000-of-00004.tfrecord', ...]
    """
    import tensorflow as tf

    if not isinstance(records, Records):
        raise DataError(f"write_tfrecord takes Records from a source such as coco() or image_folder(); "
                        f"got {type(records).__name__}")
    if not (isinstance(num_shards, int) and num_shards >= 1):
        raise DataError(f"write_tfrecord num_shards={num_shards!r} must be a positive integer")
    out_prefix = os.path.abspath(os.fspath(out_prefix))
    folder = os.path.dirname(out_prefix)
    os.makedirs(folder, exist_ok=True)
    keypoint_names = list(records.keypoint_names or [])
    finals = shard_names(out_prefix, num_shards) + [os.path.join(folder, KEYPOINTS_FILE),
                                                    os.path.join(folder, CLASSES_FILE)]
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temps = [f + tag for f in finals]
    try:
        for temp, part in zip(temps, np.array_split(np.arange(len(records)), num_shards)):
            with tf.io.TFRecordWriter(temp) as writer:
                for i in part:
                    writer.write(_example(records[int(i)], len(keypoint_names)))
        with open(temps[-2], "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in keypoint_names))
        with open(temps[-1], "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in records.class_names))
        for temp, final in zip(temps, finals):
            if final.endswith(KEYPOINTS_FILE) and not keypoint_names:
                continue  # a dataset without keypoints writes no keypoints.txt
            os.replace(temp, final)
    finally:
        for temp in temps:
            if os.path.exists(temp):
                os.remove(temp)
    return finals[:-2]


def _parse(serialized, num_keypoints=0):
    """A serialized Example as the pipeline's example dict, image decoded."""
    import tensorflow as tf

    scalar = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
              "image/height": tf.io.FixedLenFeature([], tf.int64, -1),
              "image/width": tf.io.FixedLenFeature([], tf.int64, -1),
              "image/source_id": tf.io.FixedLenFeature([], tf.string, ""),
              "image/class/label": tf.io.FixedLenFeature([], tf.int64, -1)}
    lists = {k: tf.io.VarLenFeature(tf.float32) for k in
             ("image/object/bbox/ymin", "image/object/bbox/xmin", "image/object/bbox/ymax",
              "image/object/bbox/xmax")}
    lists["image/object/class/label"] = tf.io.VarLenFeature(tf.int64)
    lists["image/object/is_crowd"] = tf.io.VarLenFeature(tf.int64)
    lists["image/object/segmentation"] = tf.io.VarLenFeature(tf.string)
    lists["image/object/keypoints"] = tf.io.VarLenFeature(tf.float32)
    features = tf.io.parse_single_example(serialized, {**scalar, **lists})
    dense = {k: tf.sparse.to_dense(features[k]) for k in lists}
    boxes = tf.stack([dense[f"image/object/bbox/{k}"] for k in ("ymin", "xmin", "ymax", "xmax")], axis=-1)
    classes = tf.cast(dense["image/object/class/label"], tf.int32)
    crowd = dense["image/object/is_crowd"]
    # Writers that leave out is_crowd get zeros, one per object.
    crowd = tf.concat([crowd, tf.zeros(tf.shape(classes)[:1] - tf.shape(crowd)[:1], tf.int64)], 0) > 0
    count = tf.shape(classes)[:1]
    # Writers that leave out segmentations or keypoints get empty ones, one per object.
    segmentation = dense["image/object/segmentation"]
    segmentation = tf.concat([segmentation, tf.fill(count - tf.shape(segmentation)[:1], "")], 0)
    keypoints = dense["image/object/keypoints"]
    keypoints = tf.concat([keypoints, tf.zeros(count * num_keypoints * 3 - tf.shape(keypoints)[:1])], 0)
    image = tf.io.decode_image(features["image/encoded"], channels=0, expand_animations=False)
    return {"image": image, "label": tf.cast(features["image/class/label"], tf.int32),
            "boxes": tf.reshape(boxes, [-1, 4]), "classes": classes, "is_crowd": crowd,
            "segmentation": segmentation, "keypoints": tf.reshape(keypoints, [-1, num_keypoints, 3]),
            "source_id": features["image/source_id"]}


def tfrecord(pattern, class_names=None):
    """Read TFRecord shards (a glob pattern, or the prefix given to write_tfrecord) as Examples.

    class_names: the list to use; by default the lines of classes.txt beside the shards, or None.
    A record whose image cannot be decoded fails at iteration time: write shards with write_tfrecord from
    checked Records (every source checks its images) to rule that out.

    Examples:
        >>> examples = tfrecord("tfr/train")                 # doctest: +SKIP
        >>> examples.class_names                             # doctest: +SKIP
        ['circle', 'rectangle', 'triangle', 'star']
    """
    import tensorflow as tf

    pattern = os.path.abspath(os.path.expanduser(os.fspath(pattern)))
    files = sorted(tf.io.gfile.glob(pattern))
    if not files or all(os.path.isdir(f) for f in files):
        files = sorted(tf.io.gfile.glob(f"{pattern}-*-of-*{_SUFFIX}"))
    if not files:
        raise DataError(f"no TFRecord files match {pattern}; pass a glob such as 'data/train-*.tfrecord' "
                        f"or the out_prefix given to write_tfrecord")
    folder = os.path.dirname(files[0])
    if class_names is None:
        class_names = _lines(os.path.join(folder, CLASSES_FILE))
    keypoint_names = _lines(os.path.join(folder, KEYPOINTS_FILE)) or []
    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 4), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda record: _parse(record, len(keypoint_names)), num_parallel_calls=tf.data.AUTOTUNE)
    return Examples(dataset, class_names, f"tfrecord({pattern})", keypoint_names=keypoint_names or None)


def _lines(path):
    """The non-empty lines of a text file beside the shards, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]
