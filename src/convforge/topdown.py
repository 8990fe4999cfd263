"""Top-down multi-person keypoints: a person detector's boxes, each person cut out as the keypoint model was
trained (data.instances.crop_box: the box grown by the recipe's box_padding, widened to the model's aspect,
preprocessing.crop), the keypoint model on every crop, its points mapped back into the image.

This is how Simple Baselines and HRNet report COCO keypoint AP: the pose model never sees a whole crowded image,
so it needs no grouping step, and its quality and the detector's are measured together by OKS AP.

Examples:
    >>> people = TopDown("runs/pose_heatmap_resnet18_figures/<run>", "runs/yolo_resnet18_figures/<run>")  # doctest: +SKIP
    >>> found = people(image)          # uint8 (H, W, 3)                                    # doctest: +SKIP
    >>> found["keypoints"].shape       # (people, 17, 2), x and y normalized to the image  # doctest: +SKIP
"""
import json
import pathlib

import numpy as np

from convforge.errors import ConvforgeError


def _run_model(path):
    """(model file, its folder) of a run folder or a .keras file."""
    path = pathlib.Path(path)
    model_path = path / "model.keras" if path.is_dir() else path
    if not model_path.is_file():
        raise ConvforgeError(f"{str(path)!r} is neither a run folder with model.keras nor a .keras model file")
    return model_path, model_path.resolve().parent


class TopDown:
    """A person detector and a keypoint model trained on person crops, as one multi-person pose estimator."""

    def __init__(self, keypoints, detector, *, score_threshold=0.3, max_people=20, person="person",
                 precision="trained"):
        """keypoints, detector: run folders or .keras files (their preprocessing.json and class_names.json beside
        them; detector None for a subclass whose boxes() finds people otherwise); person: the detector's class to
        keep (its only class where it has one)."""
        from convforge import preprocessing as pixels
        from convforge.export.saved_model import input_spec
        from convforge.modelfile import load_model
        from convforge.tasks import task_of_model

        keypoint_path, keypoint_folder = _run_model(keypoints)
        self.model = load_model(keypoint_path, precision)
        self.task = task_of_model(self.model, keypoint_folder)
        if self.task.name != "keypoints" or not self.task.options.top_down:
            raise ConvforgeError(f"{keypoints}: a top-down pipeline needs a keypoint model trained on crops "
                                 f"(head.top_down: true); this one is {self.task.name} without crops")
        self.names = _names(keypoint_folder)
        self.shape = input_spec(self.model)
        self.spec = pixels.saved_beside(keypoint_path, self.shape)[0]
        if detector is not None:
            detector_path, detector_folder = _run_model(detector)
            self.detector = load_model(detector_path, precision)
            self.detector_spec = pixels.saved_beside(detector_path, input_spec(self.detector))[0]
            detector_names = _names(detector_folder)
            if person in detector_names:
                self.person = detector_names.index(person)
            elif len(detector_names) <= 1:
                self.person = 0
            else:
                raise ConvforgeError(f"{detector}: the detector has no class {person!r}; its classes: "
                                     f"{', '.join(detector_names)}")
        self.score_threshold, self.max_people = float(score_threshold), int(max_people)
        self.padding = self.task.options.box_padding
        # One traced graph per model (any batch): called image by image, eager Keras spends ~0.15 s a call here.
        self._keypoints = _traced(self.model)
        self._detect = _traced(self.detector) if detector is not None else None

    def boxes(self, image):
        """The detector's people in one uint8 image: (P, 4) boxes normalized yxyx and (P,) scores."""
        from convforge import preprocessing as pixels

        out = self._detect(pixels.preprocess(image[None], self.detector_spec))
        n = int(np.asarray(out["num_detections"])[0])
        boxes, scores = np.asarray(out["boxes"])[0, :n], np.asarray(out["scores"])[0, :n]
        classes = np.asarray(out["classes"])[0, :n].astype(int)
        keep = (classes == self.person) & (scores >= self.score_threshold)
        return np.clip(boxes[keep], 0, 1)[:self.max_people], scores[keep][:self.max_people]

    def crops(self, image, boxes):
        """Each box (normalized yxyx) as the keypoint model's crop: (P, 4) yxyx in pixels of the image."""
        from convforge.data.instances import crop_box

        height, width = image.shape[:2]
        crops = []
        for y0, x0, y1, x1 in boxes:
            cx0, cy0, cx1, cy1 = crop_box([x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height],
                                          self.padding, self.shape[1] / self.shape[0])
            crops.append([cy0, cx0, cy1, cx1])
        return np.asarray(crops, np.float64).reshape(-1, 4)

    def keypoints(self, image, crops):
        """The keypoint model on each crop (P, 4 pixel yxyx) of a uint8 image with the model's channels: keypoints
        (P, K, 2) normalized to each crop, and their scores (P, K)."""
        from convforge import preprocessing as pixels

        if not len(crops):
            k = int(self.model.output["keypoints"].shape[1])
            return np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
        height, width = image.shape[:2]
        boxes = np.asarray(crops, np.float32) / np.array([height, width, height, width], np.float32)
        x = pixels.normalize(pixels.crop(np.repeat(np.asarray(image)[None], len(boxes), 0), boxes, self.spec),
                             self.spec)
        out = self._keypoints(x)
        return np.asarray(out["keypoints"], np.float32), np.asarray(out["scores"], np.float32)

    def __call__(self, image):
        """Every person found in one uint8 (H, W, C) image: {"boxes" (P, 4) and "keypoints" (P, K, 2), both
        normalized to the image, "box_scores" (P,), "scores" (P, K), "crops" (P, 4) yxyx pixels}."""
        boxes, box_scores = self.boxes(image)
        crops = self.crops(image, boxes)
        points, scores = self.keypoints(image, crops)
        from convforge.data.instances import from_crops

        height, width = image.shape[:2]
        in_image = from_crops(crops, points) / np.array([width, height]) if len(crops) else points
        return {"boxes": boxes, "box_scores": box_scores, "keypoints": in_image.astype(np.float32),
                "scores": scores, "crops": crops}

    def evaluate(self, records, out_dir=None):
        """COCO keypoint AP (OKS, pycocotools) of the pipeline over the Records' images, against their people."""
        from convforge import preprocessing as pixels
        from convforge.evaluate.coco import image_id_of, keypoints_to_coco, oks_ap
        from convforge.evaluate.keypoints import oks_sigmas

        sigmas = oks_sigmas(self.names)
        if sigmas is None:
            raise ConvforgeError(f"OKS AP needs COCO's 17 person keypoints; this model's are {len(self.names)} "
                                 f"others ({', '.join(self.names[:3])}, ...)")
        category_ids = records.category_ids or list(range(len(records.class_names)))
        category = int(category_ids[0])
        results, people = [], 0
        for index, record in enumerate(records):
            image = pixels.read_image(record["image_path"], self.shape[2])
            boxes, box_scores = self.boxes(image)
            crops = self.crops(image, boxes)
            points, scores = self.keypoints(image, crops)
            people += len(boxes)
            results += keypoints_to_coco(image_id_of(record, index), category, crops, points, scores, box_scores)
        # Written beside the ground-truth boxes' keypoint_results.json that the keypoint task's evaluation writes.
        metrics = oks_ap(records, results, sigmas, "detector", out_dir, "keypoint_results_detector.json")
        return {**metrics, "people_found": people, "images": len(records)}


def _traced(model):
    """The model's inference call as one tf.function over batches of any size."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def _names(folder):
    """The class_names.json of a run folder ([] where it has none)."""
    path = pathlib.Path(folder) / "class_names.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
