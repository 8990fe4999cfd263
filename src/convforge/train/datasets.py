"""From a recipe's data section to the train and val tf.data pipelines a run needs."""
import dataclasses
import math

from convforge.errors import DataError


@dataclasses.dataclass
class RunData:
    """The pipelines of one run and what the trainer needs to know about them."""

    train: object
    val: object
    class_names: list
    train_count: int
    val_count: int
    steps_per_epoch: int
    one_hot: bool
    preprocessing: dict
    val_source: object = None  # what `val` was built from, in order (evaluation reports in its terms)
    domain_b: object = None  # a two-domain recipe's second domain as inference sees it (no augmentation)


def input_shape_of(recipe):
    """The recipe's model input shape, or the architecture's default when the recipe leaves it null."""
    from convforge.registry import get_spec

    return tuple(recipe.model.input_shape or get_spec(recipe.model.architecture).default_input_shape)


# A recipe's source fields are its loader's arguments, but for these names.
_ARGUMENT_NAMES = {"shapes": {"path": "out_dir"}, "faces": {"path": "out_dir"}, "figures": {"path": "out_dir"},
                   "solids": {"path": "out_dir"}, "coco": {"images": "images_root"}}


def open_source(source_cfg, strict):
    """Open the data source a recipe's source section names (its records, arrays or examples)."""
    import inspect

    from convforge.data import load_source
    from convforge.data.sources import SOURCES

    cfg = source_cfg.model_dump()
    name = cfg.pop("source")
    if name not in SOURCES:
        raise DataError(f"data source {name!r} has no loader")
    names = _ARGUMENT_NAMES.get(name, {})
    spec = {names.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    if "strict" in inspect.signature(SOURCES[name]).parameters:
        spec["strict"] = strict
    return load_source({"source": name, **spec})


def _count(source, task=None, aspect=1.0):
    """Number of examples a source holds (None when it streams, like TFRecord); a task whose parser cuts
    records into views (crops) counts those."""
    if hasattr(source, "records"):
        if task is not None and task.parser.views:
            return len(task.parser.examples_of(source, aspect))
        return len(source.records)
    if hasattr(source, "labels"):
        return len(source.labels)
    return None


def _common(recipe, num_classes, one_hot):
    """The build_dataset arguments every split of a recipe shares."""
    data = recipe.data
    # A recipe's own stats are on the 0..255 pixel scale; build_dataset and the saved preprocessing take 0..1.
    normalize = data.normalize if isinstance(data.normalize, str) else (
        [m / 255.0 for m in data.normalize.mean], [s / 255.0 for s in data.normalize.std])
    from convforge.tasks import get_task

    task = get_task(recipe.task, recipe.head)
    return dict(task=task, input_shape=input_shape_of(recipe), batch_size=data.batch_size,
                normalize=normalize, one_hot=one_hot and task.parser.one_hot is not None, num_classes=num_classes,
                max_instances=data.max_instances)


def model_class_names(recipe, source):
    """The names of the model's classes: the source's, as the recipe's task counts them (segmentation adds the
    background first); [] for a source without names."""
    from convforge.tasks import get_task

    names = list(getattr(source, "class_names", None) or [])
    return get_task(recipe.task, recipe.head).label_names(names, source) if names else []


def plain_train_dataset(recipe, section="train"):
    """The training split (or data.domain_b's) as the model sees it at inference: no augmentation, no shuffle
    (int8 calibration)."""
    from convforge.data import build_dataset

    source = open_source(getattr(recipe.data, section), recipe.data.strict)
    num_classes = recipe.model.num_classes or len(model_class_names(recipe, source))
    return build_dataset(source, training=False, cache=False, **_common(recipe, num_classes, False))


def representative_images(recipe, count, section="train"):
    """Up to `count` training images (of data.train, or of data.domain_b for a B -> A model) as the model sees
    them at inference (no augmentation), for int8 calibration; the val split stays unseen, for judging."""
    return first_pictures(plain_train_dataset(recipe, section), count)


def first_pictures(dataset, count):
    """The first `count` pictures of a dataset of (pictures, targets) batches, as one numpy array."""
    import numpy as np

    batches = []
    for images, _ in dataset:
        batches.append(np.asarray(images))
        if sum(len(b) for b in batches) >= count:
            break
    return np.concatenate(batches)[:count]


def with_pairs(val_ds, paired_ds):
    """A two-domain task's val batches: (pictures, {"label": their labels, "paired": the same scenes drawn in
    domain B}), or without "paired" when the recipe has no paired ground truth."""
    import tensorflow as tf

    if paired_ds is None:
        return val_ds.map(lambda x, y: (x, {"label": y}))
    return tf.data.Dataset.zip(val_ds, paired_ds).map(lambda a, b: (a[0], {"label": a[1], "paired": b[0]}))


def _paired(recipe, common, val_ds):
    """val_ds with the recipe's paired ground truth zipped in, for a two-domain recipe (else val_ds)."""
    from convforge.data import build_dataset

    data = recipe.data
    if data.domain_b is None or val_ds is None:
        return val_ds
    paired = None
    if data.paired_val is not None:
        paired = build_dataset(open_source(data.paired_val, data.strict), training=False, cache=False, **common)
    return with_pairs(val_ds, paired)


def val_data(recipe):
    """(the val split as evaluation sees it, the class names), building no training pipeline; (None, names)
    when the recipe has no val split."""
    dataset, class_names, _ = val_split(recipe)
    return dataset, class_names


def val_split(recipe):
    """val_data's (dataset, class names) and the val source it was built from, in the same order (the records
    whose ids and original sizes evaluation reports results in); (None, names, None) without a val split."""
    from convforge.data import build_dataset

    data = recipe.data
    train_source = open_source(data.train, data.strict)
    class_names = model_class_names(recipe, train_source)
    if data.val is None:
        return None, class_names, None
    val_source = open_source(data.val, data.strict)
    num_classes = recipe.model.num_classes or len(class_names)
    common = _common(recipe, num_classes, False)
    dataset = _paired(recipe, common, build_dataset(val_source, training=False, cache=False, **common))
    return dataset, class_names, val_source


def datasets_for_recipe(recipe, task, skip_epochs=0):
    """Build the run's pipelines: train repeats forever, shuffled per epoch from the seed, so that a resumed
    run that skips `skip_epochs` epochs sees exactly the batches an uninterrupted run would have seen."""
    from convforge.data import build_dataset, preprocessing
    from convforge.data.augment import mixes_labels

    data, train_cfg = recipe.data, recipe.train
    input_shape = input_shape_of(recipe)
    augment = [{a.name: a.kwargs} if a.kwargs else a.name for a in data.augment]
    train_source = open_source(data.train, data.strict)
    val_source = open_source(data.val, data.strict) if data.val is not None else None
    class_names = model_class_names(recipe, train_source)
    num_classes = recipe.model.num_classes or len(class_names)
    if not num_classes:
        raise DataError(f"{recipe.name}: the training data has no class names; set model.num_classes")
    one_hot = bool(train_cfg.label_smoothing) or mixes_labels(augment)
    common = _common(recipe, num_classes, one_hot)
    normalize = common["normalize"]
    two_domains = data.domain_b is not None
    train_ds = build_dataset(train_source, training=True, cache=data.cache, shuffle_buffer=data.shuffle_buffer,
                             augment=augment, seed=train_cfg.seed, deterministic=train_cfg.deterministic,
                             drop_remainder=two_domains, **common)
    val_ds = build_dataset(val_source, training=False, cache=data.cache, **common) if val_source else None
    val_ds = _paired(recipe, common, val_ds)
    domain_b = None
    if two_domains:
        b_source = open_source(data.domain_b, data.strict)
        # The second domain shuffles and augments on its own seed, so the pairs a batch makes are not fixed.
        b_train = build_dataset(b_source, training=True, cache=data.cache, shuffle_buffer=data.shuffle_buffer,
                                augment=augment, seed=train_cfg.seed + 1, deterministic=train_cfg.deterministic,
                                drop_remainder=True, **common)
        domain_b = build_dataset(b_source, training=False, cache=False, **common)
    aspect = input_shape[1] / input_shape[0]
    train_count = _count(train_source, common["task"], aspect)
    if train_count is None:
        train_count = sum(int(x.shape[0]) for x, _ in train_ds)
    steps = train_cfg.steps_per_epoch or max(1, math.ceil(train_count / data.batch_size))
    train_ds = train_ds.repeat()
    if two_domains:
        import tensorflow as tf

        # Unpaired: each step takes a batch of each domain, (pictures of A, pictures of B).
        train_ds = tf.data.Dataset.zip(train_ds, b_train.repeat()).map(lambda a, b: (a[0], b[0]))
        steps = train_cfg.steps_per_epoch or max(1, train_count // data.batch_size)
    if skip_epochs:
        train_ds = train_ds.skip(skip_epochs * steps)
    val_count = _count(val_source, common["task"], aspect) if val_source else 0
    return RunData(train=train_ds, val=val_ds, class_names=class_names, train_count=train_count,
                   val_count=val_count or 0, steps_per_epoch=steps, one_hot=common["one_hot"],
                   preprocessing=preprocessing(input_shape, normalize), val_source=val_source, domain_b=domain_b)
