"""convforge.data: sources, the shapes generator, TFRecord round trip, the tf.data pipeline and augmentations."""
import filecmp
import json
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from convforge import data
from convforge.data.records import DataWarning
from convforge.errors import DataError

SHAPES = dict(n=48, size=40, seed=3, val_fraction=0.25)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """A small shapes dataset shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("shapes") / "ds"
    data.generate_shapes(out, **SHAPES)
    return out


@pytest.fixture(scope="module")
def train(shapes_dir):
    return data.coco(*data.ensure_shapes(shapes_dir, **SHAPES)["train"])


def _write_png(path, size=(16, 12), colour=(200, 40, 40), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)


def _load_quietly(fn, *args, **kwargs):
    """Call a source and return (result, warnings raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [w for w in caught if issubclass(w.category, DataWarning)]


# --- the shapes generator ---------------------------------------------------------------------------------

def test_shapes_are_deterministic(tmp_path, shapes_dir):
    data.generate_shapes(tmp_path / "again", **SHAPES)
    for sub in ("annotations", "images/train", "images/val"):
        cmp = filecmp.dircmp(shapes_dir / sub, tmp_path / "again" / sub)
        assert not cmp.left_only and not cmp.right_only
        match, mismatch, errors = filecmp.cmpfiles(shapes_dir / sub, tmp_path / "again" / sub, cmp.common,
                                                   shallow=False)
        assert not mismatch and not errors and len(match) == len(cmp.common)
    other = data.generate_shapes(tmp_path / "other", **{**SHAPES, "seed": 4})
    assert not filecmp.cmp(shapes_dir / "images/train/000000.png", os.path.join(other["train"].images_root,
                                                                               "000000.png"), shallow=False)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp folders left behind


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_flat_and_textured_shapes_of_one_seed_are_the_same_scenes(tmp_path):
    """style=flat renders each scene of a seed in flat colours: same annotations, the same shape colours, no
    texture; another seed gives other scenes (unpaired domains)."""
    from convforge.cli import main as cli_main

    textured = data.generate_shapes(tmp_path / "textured", n=12, size=32, objects=(1, 3))
    assert cli_main(["data", "shapes", str(tmp_path / "flat"), "--n", "12", "--size", "32", "--objects", "1,3",
                     "--style", "flat"]) == 0
    for split in ("train", "val"):
        a = json.loads(open(textured[split][0]).read())
        b = json.loads(open(tmp_path / "flat" / "annotations" / f"instances_{split}.json").read())
        assert a["annotations"] == b["annotations"] and b["info"]["params"]["style"] == "flat"
    names = sorted(os.listdir(tmp_path / "flat" / "images" / "train"))
    for name in names[:4]:
        rough = np.asarray(Image.open(tmp_path / "textured" / "images" / "train" / name), "float32")
        flat = np.asarray(Image.open(tmp_path / "flat" / "images" / "train" / name), "float32")
        # A flat picture has a colour per region (background + at most 3 shapes); the textured one is the same
        # layout with texture, shading and noise on top.
        assert len(np.unique(flat.reshape(-1, 3), axis=0)) <= 4
        assert len(np.unique(rough.reshape(-1, 3), axis=0)) > 50
        assert np.abs(rough - flat).mean() < 60
    other = data.generate_shapes(tmp_path / "other", n=12, size=32, objects=(1, 3), seed=1, style="flat")
    assert json.loads(open(other["train"][0]).read())["annotations"] != \
        json.loads(open(tmp_path / "flat" / "annotations" / "instances_train.json").read())["annotations"]
    with pytest.raises(DataError, match="style"):
        data.generate_shapes(tmp_path / "bad", n=12, size=32, style="sketch")


def test_shapes_are_valid_coco(shapes_dir, capsys):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    api = COCO(str(shapes_dir / "annotations/instances_train.json"))
    capsys.readouterr()
    assert len(api.getImgIds()) == 36 and len(api.getAnnIds()) == 36
    cats = api.loadCats(api.getCatIds())
    assert [c["name"] for c in cats] == list(data.SHAPE_CLASSES)
    assert all(c["keypoints"] == list(data.KEYPOINT_NAMES) and c["skeleton"] for c in cats)
    for ann in api.loadAnns(api.getAnnIds()):
        image = api.loadImgs(ann["image_id"])[0]
        mask = api.annToMask(ann)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert len(ys) == ann["area"] > 0
        assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h
        assert mask_utils.area(mask_utils.encode(np.asfortranarray(mask))) == ann["area"]
        kp = np.array(ann["keypoints"]).reshape(-1, 3)
        assert kp.shape == (5, 3) and (kp[:, 2] == 2).all()
        assert (kp[:, 0] >= 0).all() and (kp[:, 0] < image["width"]).all()
        assert (kp[:, 1] >= 0).all() and (kp[:, 1] < image["height"]).all()
        # The shape really is drawn where its mask says: inside differs clearly from just outside.
        pixels = np.asarray(Image.open(shapes_dir / "images/train" / image["file_name"]), np.float32)
        ring = np.zeros_like(mask, bool)
        ring[max(int(y) - 2, 0):int(y + h) + 2, max(int(x) - 2, 0):int(x + w) + 2] = True
        ring &= ~mask.astype(bool)
        if ring.sum() > 20:
            inside = pixels[mask.astype(bool)].mean(0)
            assert np.abs(inside - pixels[ring].mean(0)).sum() > 20


def test_shapes_classes_are_balanced(train):
    counts = np.bincount([r["label"] for r in train], minlength=4)
    assert counts.max() - counts.min() <= 1


def test_ensure_shapes_reuses_and_regenerates(tmp_path):
    out = tmp_path / "ds"
    first = data.ensure_shapes(out, n=8, size=32)
    stamp = os.stat(first["train"].annotations).st_mtime_ns
    assert os.stat(data.ensure_shapes(out, n=8, size=32)["train"].annotations).st_mtime_ns == stamp
    again = data.ensure_shapes(out, n=10, size=32)
    with open(again["train"].annotations) as f:
        assert json.load(f)["info"]["params"]["n"] == 10
    assert len(os.listdir(again["train"].images_root)) == 8
    with pytest.raises(DataError, match="unknown argument 'sise'.*'size'"):
        data.ensure_shapes(out, sise=32)


def test_generate_refuses_foreign_folder_and_multi_object(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a shapes dataset"):
        data.generate_shapes(tmp_path / "mine", n=4)
    assert (tmp_path / "mine" / "notes.txt").exists()
    with pytest.raises(DataError, match="did you mean 'star'"):
        data.generate_shapes(tmp_path / "x", n=4, classes=("circle", "stars"))
    splits = data.generate_shapes(tmp_path / "multi", n=6, size=64, objects=(2, 3), val_fraction=0.0)
    records = data.coco(*splits["train"])
    assert all(2 <= len(r["objects"]) <= 3 for r in records)


# --- coco ---------------------------------------------------------------------------------------------------

def test_coco_loads_shapes(train, shapes_dir):
    assert len(train) == 36 and train.class_names == list(data.SHAPE_CLASSES)
    assert train.category_ids == [1, 2, 3, 4] and train.keypoint_names == list(data.KEYPOINT_NAMES)
    assert not train.skipped
    record = train[0]
    assert record["width"] == record["height"] == 40 and os.path.exists(record["image_path"])
    obj = record["objects"][0]
    assert record["label"] == obj["category_id"] and len(obj["bbox"]) == 4 and obj["segmentation"]
    val = data.load_shapes("val", out_dir=shapes_dir, **SHAPES)
    assert len(val) == 12


def _bad_coco(shapes_dir, tmp_path):
    """A copy of the train split with a corrupt image, a '../' path and an absolute path."""
    root = tmp_path / "images"
    shutil.copytree(shapes_dir / "images/train", root)
    with open(shapes_dir / "annotations/instances_train.json") as f:
        coco = json.load(f)
    (root / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    _write_png(str(tmp_path / "evil.png"), (40, 40))
    coco["images"] += [{"id": 900, "file_name": "../evil.png", "width": 40, "height": 40},
                       {"id": 901, "file_name": str(tmp_path / "evil.png"), "width": 40, "height": 40}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path, root


def test_coco_skips_bad_files_with_one_warning(shapes_dir, tmp_path):
    annotations, root = _bad_coco(shapes_dir, tmp_path)
    records, caught = _load_quietly(data.coco, annotations, root)
    assert len(caught) == 1 and "skipped 3" in str(caught[0].message)
    assert len(records) == 35 and len(records.skipped) == 3
    reasons = dict(records.skipped)
    assert "outside" in reasons["../evil.png"] and any("unreadable" in r for r in reasons.values())
    assert all("evil" not in r["image_path"] for r in records)
    with pytest.raises(DataError, match=r"evil\.png .*was rejected.*strict=False"):
        data.coco(annotations, root, strict=True)
    coco = json.loads(annotations.read_text())
    coco["images"] = coco["images"][:-2]
    annotations.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"000001\.png .*unreadable"):
        data.coco(annotations, root, strict=True)


def test_coco_missing_and_empty(shapes_dir, tmp_path):
    with pytest.raises(DataError, match="nothere.json"):
        data.coco(tmp_path / "nothere.json", shapes_dir / "images/train")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DataError, match=r"coco\(.*empty.json\) has no usable images"):
        data.coco(empty, shapes_dir / "images/train")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        data.coco(broken, shapes_dir / "images/train")


# --- image_folder and voc -------------------------------------------------------------------------------------

def test_image_folder(tmp_path):
    _write_png(str(tmp_path / "dog/a.png"))
    _write_png(str(tmp_path / "dog/nested/b.PNG"), mode="L")
    _write_png(str(tmp_path / "cat/c.png"), (20, 10))
    Image.new("RGB", (8, 8)).save(tmp_path / "cat/d.jpg")
    (tmp_path / "cat/readme.txt").write_text("not an image")
    (tmp_path / "cat/broken.jpg").write_bytes(b"garbage")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "dog/cut.jpg", quality=90)
    whole = (tmp_path / "dog/cut.jpg").read_bytes()
    (tmp_path / "dog/cut.jpg").write_bytes(whole[:len(whole) // 2])  # PIL's verify() alone lets this pass
    records, caught = _load_quietly(data.image_folder, tmp_path)
    assert records.class_names == ["cat", "dog"]
    assert sorted((os.path.basename(r["image_path"]), r["label"]) for r in records) == [
        ("a.png", 1), ("b.PNG", 1), ("c.png", 0), ("d.jpg", 0)]
    assert next(r for r in records if r["image_path"].endswith("c.png"))["width"] == 20
    assert len(caught) == 1 and len(records.skipped) == 2
    assert "truncated" in dict(records.skipped)[str(tmp_path / "dog/cut.jpg")]
    with pytest.raises(DataError, match="broken.jpg"):
        data.image_folder(tmp_path, strict=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        data.image_folder(tmp_path / "empty")


def _voc_xml(filename, size, objects):
    parts = [f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
             f"<height>{size[1]}</height><depth>3</depth></size>"]
    for name, box, difficult in objects:
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     + "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
                     + "</bndbox></object>")
    return "".join(parts) + "</annotation>"


def test_voc(tmp_path):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / d).mkdir(parents=True)
    items = {"img1": [("dog", (1, 1, 10, 20), 0), ("person", (5, 5, 30, 30), 1)],
             "img2": [("cat", (3, 4, 12, 9), 0)],
             "img3": [("person", (2, 2, 8, 8), 0)]}
    for name, objects in items.items():
        Image.new("RGB", (32, 24)).save(tmp_path / f"JPEGImages/{name}.jpg")
        (tmp_path / f"Annotations/{name}.xml").write_text(_voc_xml(f"{name}.jpg", (32, 24), objects))
    (tmp_path / "ImageSets/Main/train.txt").write_text("img1\nimg2\nimg3\n")
    records = data.voc(tmp_path, "train")
    assert len(records) == 3 and records.class_names == list(data.VOC_CLASSES)
    first = records[0]
    dog, person = first["objects"]
    assert dog["bbox"] == [0.0, 0.0, 10.0, 20.0] and dog["iscrowd"] == 0
    assert person["iscrowd"] == 1 and person["difficult"]
    assert first["label"] == data.VOC_CLASSES.index("dog")  # the larger 'person' is difficult
    found = data.voc(tmp_path, "train", classes="found")
    assert found.class_names == ["cat", "dog", "person"] and found[1]["label"] == 0
    (tmp_path / "Annotations/img3.xml").write_text(_voc_xml("img3.jpg", (32, 24), [("persn", (1, 1, 4, 4), 0)]))
    with pytest.raises(DataError, match="'persn'.*did you mean 'person'"):
        data.voc(tmp_path, "train")
    with pytest.raises(DataError, match="val.txt"):
        data.voc(tmp_path, "val")



def _palette_png(path, values):
    image = Image.fromarray(np.asarray(values, np.uint8), mode="P")
    image.putpalette([v for k in range(256) for v in (k, 255 - k, (7 * k) % 256)])
    image.save(path)


def _voc_masks(root):
    """Two 40x32 VOC segmentation images: dog and two people with a void border, and one cat."""
    for d in ("JPEGImages", "ImageSets/Segmentation", "SegmentationClass", "SegmentationObject"):
        (root / d).mkdir(parents=True)
    dog, person, cat = (data.VOC_CLASSES.index(n) + 1 for n in ("dog", "person", "cat"))
    classes, objects = np.zeros((2, 32, 40), np.uint8), np.zeros((2, 32, 40), np.uint8)
    classes[0, 2:10, 3:12], objects[0, 2:10, 3:12] = dog, 1
    classes[0, 12:20, 14:20], objects[0, 12:20, 14:20] = person, 2
    classes[0, 12:20, 22:30], objects[0, 12:20, 22:30] = person, 3
    classes[0, 11, 14:20] = objects[0, 11, 14:20] = 255
    classes[1, 5:15, 5:25], objects[1, 5:15, 5:25] = cat, 1
    for k, name in enumerate(("a", "b")):
        Image.new("RGB", (40, 32), (40 * k, 90, 160)).save(root / f"JPEGImages/{name}.jpg")
        _palette_png(root / f"SegmentationClass/{name}.png", classes[k])
        _palette_png(root / f"SegmentationObject/{name}.png", objects[k])
    (root / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    return classes


def test_voc_masks_give_semantic_and_instance_objects(tmp_path):
    from convforge.data.instances import rasterize

    classes = _voc_masks(tmp_path)
    semantic = data.voc(tmp_path, "train", masks="class")
    assert [r["image_id"] for r in semantic] == ["a", "b"]
    first = semantic[0]["objects"]
    # One object per class present (dog, person) and the void pixels as a crowd region.
    assert [(o["category_id"], o["iscrowd"]) for o in first] == [(11, 0), (14, 0), (0, 1)]
    for obj, value in zip(first, (12, 15, 255)):
        assert np.array_equal(rasterize(obj["segmentation"], 32, 40, 32, 40), classes[0] == value)
    assert first[1]["bbox"] == [14.0, 12.0, 16.0, 8.0] and first[1]["area"] == 112.0
    assert semantic[0]["label"] == 14  # the largest non-crowd object: the two people's pixels together

    instances = data.voc(tmp_path, "train", masks="object")
    people = [o for o in instances[0]["objects"] if o["category_id"] == 14]
    assert len(instances[0]["objects"]) == 3 and [o["bbox"] for o in people] == [[14.0, 12.0, 6.0, 8.0],
                                                                                [22.0, 12.0, 8.0, 8.0]]
    assert all(o["iscrowd"] == 0 for o in instances[0]["objects"])

    # Bad masks are skipped with their reason (or rejected under strict); a bad option names what is accepted.
    _palette_png(tmp_path / "SegmentationClass/b.png", np.full((32, 40), 40, np.uint8))
    with pytest.raises(DataError, match="b.jpg.*40.*not class numbers 1..20"):
        data.voc(tmp_path, "train", masks="class", strict=True)
    _palette_png(tmp_path / "SegmentationClass/b.png", classes[1])
    (tmp_path / "SegmentationObject/a.png").unlink()
    records, caught = _load_quietly(data.voc, tmp_path, "train", masks="object")
    assert len(records) == 1 and "not found" in dict(records.skipped)[str(tmp_path / "JPEGImages/a.jpg")]
    with pytest.raises(DataError, match="masks='instances'.*'class', 'object'"):
        data.voc(tmp_path, "train", masks="instances")
    with pytest.raises(DataError, match="class numbers, not names"):
        data.voc(tmp_path, "train", classes="found", masks="class")


def test_the_voc_segmentation_template_reads_masks_into_class_maps_and_trains(tmp_path, monkeypatch):
    """The template for users' VOC folders: VOC's numbers become the run's class ids (background 0 first), void
    the ignore label, and it trains a step once its paths point at real files."""
    import convforge
    from convforge.errors import RecipeError
    from convforge.recipes import load_recipe
    from convforge.train.datasets import val_data

    monkeypatch.chdir(tmp_path)
    template = os.path.join(os.path.dirname(__file__), "..", "recipes", "templates", "deeplab_resnet50_voc.yaml")
    with pytest.raises(RecipeError, match="not found"):  # as shipped, the placeholders name no files
        load_recipe(template)
    classes = _voc_masks(tmp_path / "voc")
    sets = [f"data.train.root={tmp_path}/voc", f"data.val.root={tmp_path}/voc", "data.val.split=train",
            "model.input_shape=[32,40,3]", "model.options={depths: [1,1,1,1], widths: [8,16,32,64], "
            "output_stride: 16}", "head.channels=8", "data.batch_size=2", "data.augment=[]", "train.epochs=1",
            "train.steps_per_epoch=1", "train.schedule=constant", "export.formats=[saved_model]"]
    recipe = load_recipe(template, overrides=sets)
    _, labels = next(iter(val_data(recipe)[0]))
    assert np.array_equal(np.asarray(labels), classes)
    result = convforge.train(recipe, printer=lambda *_: None, verbose=0)
    metrics = json.loads(open(os.path.join(result["run_dir"], "metrics.json")).read())
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["val_mean_iou"] <= 1


# --- tfrecord -------------------------------------------------------------------------------------------------

def test_tfrecord_round_trip(train, tmp_path):
    paths = data.write_tfrecord(train, tmp_path / "tfr" / "train", num_shards=3)
    assert [os.path.basename(p) for p in paths] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert sorted(os.listdir(tmp_path / "tfr")) == sorted([os.path.basename(p) for p in paths] +
                                                          ["classes.txt", "keypoints.txt"])
    examples = data.tfrecord(tmp_path / "tfr" / "train")
    assert examples.class_names == train.class_names
    by_id = {str(r["image_id"]): r for r in train}
    seen = 0
    for ex in examples.dataset.as_numpy_iterator():
        record = by_id[ex["source_id"].decode()]
        np.testing.assert_array_equal(ex["image"], np.asarray(Image.open(record["image_path"])))
        assert ex["label"] == record["label"]
        x, y, w, h = record["objects"][0]["bbox"]
        s = record["width"]
        np.testing.assert_allclose(ex["boxes"], [[y / s, x / s, (y + h) / s, (x + w) / s]], atol=1e-6)
        assert list(ex["classes"]) == [record["objects"][0]["category_id"]] and not ex["is_crowd"].any()
        seen += 1
    assert seen == len(train)
    ds = data.build_dataset(examples, "localization", (32, 32, 3), 8, False)
    assert sum(int(b[1]["box"].shape[0]) for b in ds) == len(train)
    with pytest.raises(DataError, match="no TFRecord files match"):
        data.tfrecord(tmp_path / "nothing-*.tfrecord")


# --- digits ---------------------------------------------------------------------------------------------------

def test_digits_split():
    train, val = data.digits("train"), data.digits("val")
    assert len(train.labels) + len(val.labels) == 1797
    assert not set(train.ids) & set(val.ids)
    assert train.images.shape[1:] == (8, 8, 1) and train.images.dtype == np.uint8 and train.images.max() == 255
    np.testing.assert_array_equal(data.digits("val").ids, val.ids)
    assert not np.array_equal(data.digits("val", seed=1).ids, val.ids)
    assert abs(len(val.labels) / 1797 - 0.2) < 0.01 and np.bincount(val.labels).min() >= 34
    with pytest.raises(DataError, match="did you mean 'val'"):
        data.digits("vall")
    images, labels = next(iter(data.build_dataset(val, "classification", (32, 32, 1), 16, False,
                                                  normalize="unit")))
    assert images.shape == (16, 32, 32, 1) and labels.dtype.name == "int32"


# --- the pipeline ---------------------------------------------------------------------------------------------

def test_classification_batches_and_normalization(train):
    unit = data.build_dataset(train, "classification", (24, 24, 3), 8, False, normalize="unit")
    images, labels = next(iter(unit))
    assert images.shape == (8, 24, 24, 3) and images.dtype.name == "float32"
    assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0
    assert list(labels.numpy()) == [r["label"] for r in train[:8]]
    imagenet, _ = next(iter(data.build_dataset(train, "classification", (24, 24, 3), 8, False)))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(imagenet.numpy(), (images.numpy() - mean) / std, atol=1e-4)
    grey, _ = next(iter(data.build_dataset(train, "classification", (24, 24, 1), 8, False, normalize="unit")))
    assert grey.shape == (8, 24, 24, 1)
    batches = list(data.build_dataset(train, "classification", (24, 24, 3), 10, True, drop_remainder=True,
                                      seed=0))
    assert len(batches) == 3 and all(b[0].shape[0] == 10 for b in batches)
    assert data.preprocessing((24, 24, 3), "imagenet") == {
        "resize": [24, 24], "channels": 3, "interpolation": "bilinear", "scale": 1 / 255.0,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    with pytest.raises(DataError, match="did you mean 'unit'"):
        data.build_dataset(train, "classification", (24, 24, 3), 8, False, normalize="unti")


def test_undecodable_file_does_not_stop_the_pipeline(train, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    # Records built by hand skip the up-front check, so the pipeline's own guard must drop the file.
    records = data.Records(train.records[:5] + [{**train[0], "image_path": str(bad)}], train.class_names)
    ds = data.build_dataset(records, "classification", (16, 16, 3), 4, True, seed=0)
    assert sum(int(b[0].shape[0]) for b in ds) == 5


def test_localization_targets_match_annotations(train):
    ds = data.build_dataset(train, "localization", (20, 20, 3), 6, False)
    _, targets = next(iter(ds))
    assert set(targets) == {"label", "box"} and targets["box"].shape == (6, 4)
    for record, box, label in zip(train[:6], targets["box"].numpy(), targets["label"].numpy()):
        x, y, w, h = record["objects"][0]["bbox"]
        s = record["width"]
        np.testing.assert_allclose(box, [y / s, x / s, (y + h) / s, (x + w) / s], atol=1e-6)
        assert label == record["objects"][0]["category_id"]
    with pytest.raises(DataError, match="no boxes"):
        data.build_dataset(data.digits("val"), "localization", (32, 32, 1), 8, False)


def test_flip_moves_the_box(train):
    ds = data.build_dataset(train[:1], "localization", (40, 40, 3), 1, True, augment=["flip"], normalize="unit",
                            seed=1)
    original, target = next(iter(data.build_dataset(train[:1], "localization", (40, 40, 3), 1, False,
                                                    normalize="unit")))
    y0, x0, y1, x1 = target["box"].numpy()[0]
    flipped = kept = 0
    for _ in range(12):
        image, out = next(iter(ds))
        box = out["box"].numpy()[0]
        if np.allclose(image.numpy(), original.numpy()):
            np.testing.assert_allclose(box, [y0, x0, y1, x1], atol=1e-5)
            kept += 1
        else:
            np.testing.assert_allclose(image.numpy(), original.numpy()[:, :, ::-1], atol=1e-5)
            np.testing.assert_allclose(box, [y0, 1 - x1, y1, 1 - x0], atol=1e-5)
            flipped += 1
        assert out["label"].numpy()[0] == target["label"].numpy()[0]
    assert flipped and kept


@pytest.mark.parametrize("augment", ["flip", {"translate": {"factor": 0.25}}, {"crop": {"zoom": 0.4}},
                                     {"rotate": {"degrees": 20}}])
def test_geometric_augmentations_follow_the_object(augment):
    import tensorflow as tf

    from convforge.data.augment import build_augmenter

    images = np.zeros((8, 48, 48, 3), np.float32)
    images[:, 10:26, 6:30] = 255.0  # a white box, rows 10..25, columns 6..29
    boxes = np.tile(np.array([[10 / 48, 6 / 48, 26 / 48, 30 / 48]], np.float32), (8, 1))
    apply = build_augmenter([augment], "localization", (48, 48, 3), seed=2)
    out_images, targets = apply(tf.constant(images), {"label": tf.zeros(8, tf.int32), "box": tf.constant(boxes)})
    for image, box in zip(out_images.numpy(), targets["box"].numpy()):
        ys, xs = np.nonzero(image[..., 0] > 127)
        pixels = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]) / 48
        np.testing.assert_allclose(box, pixels, atol=2.5 / 48)
        assert (0 <= box).all() and (box <= 1).all()


def test_deterministic_pipeline_repeats(train):
    def run():
        ds = data.build_dataset(train, "localization", (24, 24, 3), 8, True,
                                augment=["flip", "crop", "rotate", "color_jitter"], seed=7, deterministic=True)
        return [(b[0].numpy(), b[1]["box"].numpy()) for b in ds.take(3)]

    first, second = run(), run()
    for (a_img, a_box), (b_img, b_box) in zip(first, second):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_box, b_box)
    cached = data.build_dataset(train, "classification", (24, 24, 3), 8, True, cache=True, seed=7,
                                deterministic=True)
    assert sum(int(b[0].shape[0]) for b in cached) == len(train) == sum(int(b[0].shape[0]) for b in cached)


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixing_gives_soft_labels(train, name):
    ds = data.build_dataset(train, "classification", (24, 24, 3), 12, True, augment=[name, "flip"], seed=3,
                            deterministic=True)
    labels = np.concatenate([b[1].numpy() for b in ds])
    assert labels.shape == (len(train), 4) and labels.dtype == np.float32
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-5)
    assert (labels.max(1) < 1 - 1e-4).any()
    _, val_labels = next(iter(data.build_dataset(train, "classification", (24, 24, 3), 12, False, augment=[name])))
    assert val_labels.shape == (12, 4) and set(np.unique(val_labels.numpy())) <= {0.0, 1.0}


def test_augmentation_names_are_checked(train):
    with pytest.raises(DataError, match="unknown augmentation 'flipp'.*did you mean 'flip'"):
        data.build_dataset(train, "classification", (24, 24, 3), 8, True, augment=["flipp"])
    with pytest.raises(DataError, match="'mixup' cannot be used for localization"):
        data.build_dataset(train, "localization", (24, 24, 3), 8, True, augment=["mixup"])
    with pytest.raises(DataError, match="no argument 'zom'.*did you mean 'zoom'"):
        data.check_augment([{"name": "crop", "zom": 0.2}], "classification")
    assert set(data.AUGMENTATIONS) >= {"flip", "crop", "translate", "rotate", "color_jitter", "rand_augment",
                                       "mixup", "cutmix"}
    ds = data.build_dataset(train, "classification", (24, 24, 3), 8, True, augment=["rand_augment"], seed=0)
    assert next(iter(ds))[0].shape == (8, 24, 24, 3)


def test_source_specs(shapes_dir):
    ds = data.build_dataset({"source": "shapes", "split": "val", "out_dir": str(shapes_dir), **SHAPES},
                            "classification", (16, 16, 3), 4, False)
    assert next(iter(ds))[0].shape == (4, 16, 16, 3)
    with pytest.raises(DataError, match="did you mean 'coco'"):
        data.load_source({"source": "cocoa"})
    with pytest.raises(DataError, match="no argument 'splt'"):
        data.load_source({"source": "digits", "splt": "val"})
    with pytest.raises(DataError, match="did you mean 'localization'"):
        data.build_dataset(data.digits("val"), "localisation", (32, 32, 1), 8, False)


def test_predict_and_calibration_see_the_pixels_the_pipeline_trains_on(tmp_path):
    """One contract: an odd-sized JPEG, a grey PNG and an RGBA PNG read by convforge.preprocessing (predict,
    int8 calibration) come out equal to the evaluation pipeline's batch, with custom 0..255-scale stats."""
    from convforge import preprocessing as pixels
    from convforge.export.calibration import calibration_images

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs" / "only"
    folder.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), np.uint8)).save(folder / "a.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (20, 31), np.uint8)).save(folder / "b.png")
    Image.fromarray(rng.integers(0, 255, (64, 40, 4), np.uint8)).save(folder / "c.png")
    records = data.image_folder(tmp_path / "imgs")
    stats = ([0.3, 0.5, 0.4], [0.2, 0.25, 0.3])
    batch, _ = next(iter(data.build_dataset(records, "classification", (24, 24, 3), 8, False, normalize=stats)))
    spec = pixels.check(pixels.contract((24, 24, 3), stats), 3)
    ours = np.concatenate([np.asarray(pixels.preprocess(pixels.read_image(r["image_path"], 3)[None], spec))
                           for r in records])
    np.testing.assert_allclose(ours, np.asarray(batch), atol=1e-5)
    calibration = calibration_images(tmp_path / "imgs", (24, 24, 3), spec)
    np.testing.assert_allclose(calibration, ours, atol=1e-5)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png' could not be read"):
        pixels.read_image(folder / "broken.png", 3)


def test_a_cached_training_set_listed_class_by_class_is_not_read_in_that_order(tmp_path):
    """A cache keeps the first order of its examples and shuffle_buffer mixes only nearby ones: an image folder
    (one class after another) must still give batches of mixed classes, and the same ones for the same seed."""
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for k in range(40):
            Image.new("RGB", (8, 8), (k, 0, 0)).save(tmp_path / cls / f"{k}.png")
    records = data.image_folder(str(tmp_path))
    assert [r["label"] for r in records][:40] == [0] * 40  # listed class by class

    def first_batch(seed):
        ds = data.build_dataset(records, "classification", (8, 8, 3), 16, True, cache=True, shuffle_buffer=4,
                                seed=seed, normalize="unit", deterministic=True)
        return np.asarray(next(iter(ds))[1])

    labels = first_batch(0)
    assert 0 < labels.sum() < 16, labels
    np.testing.assert_array_equal(first_batch(0), labels)
