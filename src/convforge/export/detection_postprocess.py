"""A detector's TFLite graph ending in TFLite's own `TFLite_Detection_PostProcess` op instead of our NMS layer.

Phone SSD pipelines (and the TFLite task library) expect that op: it is registered in the stock LiteRT
interpreter, runs NMS in C++ and needs no builtin-op gymnastics. The converter emits it for a `tf.function` that
declares it implements the op (`experimental_implements`, a NameAttrList in text form), whose body only has to
return tensors of the right shapes.

The op decodes boxes from anchors (centre-size deltas over scale factors) before its NMS. Our detectors decode
in their own ways (SSD deltas with variances and clipping, YOLO's bounded offsets, Faster R-CNN's per-class
deltas on proposals), so the model's own decoder stays in the graph and the op receives each decoded box as an
offset from one unit anchor (centre 0.5, 0.5; size 1; scales 1): the op's decoding gives back those very boxes,
and its NMS sees what the Keras NMS layer sees. Its NMS is the "regular" one (per class, `detections_per_class`
each, then the best `max_detections` overall), the same rule as `layers.nms.NonMaxSuppression`.

The op runs one image per call (its kernel's batch is 1), so the artifact's input is [1, H, W, C].
"""
import numpy as np

from convforge.errors import ExportError
from convforge.export.saved_model import INPUT_NAME, input_spec

OP_NAME = "TFLite_Detection_PostProcess"
OUTPUTS = ("boxes", "scores", "classes", "num_detections")
# A box of zero height or width would encode to log(0); this floor decodes back to a size of 1e-12.
_MIN_SIZE = 1e-12


def nms_layers(model):
    """Every NonMaxSuppression layer of a model (nested models included)."""
    from convforge.layers.nms import NonMaxSuppression

    return [layer for layer in model._flatten_layers() if isinstance(layer, NonMaxSuppression)]


def nms_layer(model, purpose="op"):
    """The model's NonMaxSuppression layer, when its four outputs are the model's outputs; else ExportError saying
    what needed it: purpose "op" (tflite_postprocess_op) or "python" (nms='python')."""
    found = nms_layers(model)
    outputs = model.output if isinstance(model.output, dict) else {}
    if len(found) != 1 or set(outputs) != set(OUTPUTS):
        need = (f"tflite_postprocess_op replaces a detector's NonMaxSuppression layer with {OP_NAME}" if purpose == "op"
                else "nms='python' ends every artifact at the inputs of a detector's NonMaxSuppression layer")
        other = "the other formats" if purpose == "op" else "nms='graph'"
        raise ExportError(f"{need}, and model {model.name!r} has {len(found)} such layer(s) with outputs "
                          f"{sorted(outputs) or 'not a dict'}; accepted: a convforge detector (outputs "
                          f"{', '.join(OUTPUTS)} from one NonMaxSuppression layer, nothing computed after it, as "
                          f"Mask R-CNN's masks are), or {other}")
    return found[0]


def implements_signature(nms, num_classes):
    """The `experimental_implements` string binding a tf.function to the op with `nms`'s settings."""
    attrs = (("max_detections", "i", nms.max_detections), ("max_classes_per_detection", "i", 1),
             ("detections_per_class", "i", nms.max_detections), ("use_regular_nms", "b", "true"),
             ("nms_score_threshold", "f", f"{nms.score_threshold:f}"),
             ("nms_iou_threshold", "f", f"{nms.iou_threshold:f}"),
             ("y_scale", "f", "1.000000"), ("x_scale", "f", "1.000000"),
             ("h_scale", "f", "1.000000"), ("w_scale", "f", "1.000000"),
             ("num_classes", "i", int(num_classes)))
    return " ".join([f'name: "{OP_NAME}"'] + [f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}'
                                               for key, kind, value in attrs])


def unit_anchor_encoding(boxes):
    """yxyx boxes (..., 4) as the op's centre-size encoding [y, x, log h, log w] against the unit anchor."""
    import tensorflow as tf

    size = tf.maximum(boxes[..., 2:] - boxes[..., :2], _MIN_SIZE)
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2.0 - 0.5
    return tf.concat([centre, tf.math.log(size)], axis=-1)


def serving_function(model, output_names):
    """The tf.function `image [1, H, W, C] -> {name: output}`: the model up to its NMS layer's inputs, then the
    op; outputs named and typed as `saved_model.serving_function` names them (classes and counts int32)."""
    import keras
    import tensorflow as tf

    nms = nms_layer(model)
    decoded = keras.Model(model.input, list(nms.input), name=f"{model.name}_decoded")
    num_classes = decoded.output[1].shape[-1]
    height, width, channels = input_spec(model)
    count = nms.max_detections
    # One unit anchor per candidate box: (centre y, centre x, h, w) = (0.5, 0.5, 1, 1).
    anchors = np.tile(np.array([[0.5, 0.5, 1.0, 1.0]], np.float32), (decoded.output[0].shape[1], 1))

    @tf.function(experimental_implements=implements_signature(nms, num_classes))
    def postprocess(box_encodings, class_predictions, anchor_boxes):
        """Stands for the op in the converted graph; the converter replaces this body."""
        del box_encodings, class_predictions, anchor_boxes
        return (tf.zeros([1, count, 4]), tf.zeros([1, count]), tf.zeros([1, count]), tf.zeros([1]))

    keys = list(model.output)  # the model's own output order, which output_names follow

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, channels], tf.float32, name=INPUT_NAME)])
    def serve(image):
        """The detections for one image, post-processed by TFLite's op."""
        boxes, scores = decoded(image, training=False)
        boxes, classes, kept_scores, found = postprocess(
            unit_anchor_encoding(tf.cast(boxes, tf.float32)), tf.cast(scores, tf.float32), tf.constant(anchors))
        result = {"boxes": boxes, "scores": kept_scores, "classes": tf.cast(classes, tf.int32),
                  "num_detections": tf.cast(found, tf.int32)}
        return {name: result[key] for name, key in zip(output_names, keys)}

    return serve


# --- NMS in Python: for a runtime or format that cannot hold the post-processing ops.

def pre_nms_model(model):
    """(the detector without its NMS layer: image -> {"boxes" (B, A, 4), "scores" (B, A, K)}, the NMS layer)."""
    import keras

    nms = nms_layer(model, purpose="python")
    boxes, scores = nms.input
    return keras.Model(model.input, {"boxes": boxes, "scores": scores}, name=f"{model.name}_pre_nms"), nms


def nms_record(nms, names):
    """The card's record of the NMS that `apply_nms` runs on an artifact's outputs named `names` (boxes, scores)."""
    import keras

    return {"where": "python", "layer": keras.saving.serialize_keras_object(nms),
            "inputs": {"boxes": names[0], "scores": names[1]}}


def apply_nms(outputs, card):
    """An artifact's pre-NMS outputs {"boxes", "scores"} (numpy) -> the detector's four outputs after NMS, run by
    the NonMaxSuppression layer the export card records (an export made with nms="python")."""
    import keras

    record = (card.get("postprocess") or {}).get("nms") if isinstance(card, dict) else None
    if not record or record.get("where") != "python":
        raise ExportError("this export holds its NMS in the graph (or is not a detector's); accepted: the card "
                          "of an export made with nms='python' (CLI: convforge export --nms python)")
    from convforge.layers.nms import NonMaxSuppression

    layer = keras.saving.deserialize_keras_object(record["layer"],
                                                  custom_objects={"NonMaxSuppression": NonMaxSuppression})
    names = record["inputs"]
    result = layer(np.asarray(outputs[names["boxes"]], np.float32), np.asarray(outputs[names["scores"]], np.float32))
    return {name: np.asarray(value) for name, value in result.items()}
