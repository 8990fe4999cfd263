"""Non-maximum suppression as a Keras layer, so a detector's exported graph ends in final detections.

Per class, greedy NMS (a box is dropped when it overlaps a higher-scoring kept box of its class by more than
iou_threshold), boxes under score_threshold dropped, then the best max_detections over all classes kept. Built on
`tf.image.non_max_suppression_padded`, which TFLite converts to builtin ops (combined_non_max_suppression is
not a TFLite builtin and LiteRT has no Flex delegate), so the same graph runs in TF, LiteRT and ONNX Runtime.
"""
import keras


@keras.saving.register_keras_serializable(package="convforge")
class NonMaxSuppression(keras.layers.Layer):
    """(boxes (B, A, 4) yxyx, scores (B, A, K)) -> {"boxes" (B, N, 4), "scores" (B, N), "classes" (B, N) int32,
    "num_detections" (B,) int32}, padded to N = max_detections with zeros, best first."""

    receptive_field_passthrough = True
    # Full-integer TFLite keeps these ops in float32: IoU's division by an int8-rounded union meets a zero divisor,
    # which LiteRT's int8 DIV refuses at run time, and box overlaps need more than 8 bits anyway.
    float_ops_under_int8 = ("DIV",)

    def __init__(self, max_detections=100, iou_threshold=0.5, score_threshold=0.05, **kwargs):
        super().__init__(**kwargs)
        self.max_detections = int(max_detections)
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)

    def call(self, boxes, scores):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(f"NonMaxSuppression runs on the TensorFlow backend, not "
                                      f"{keras.backend.backend()}; accepted: KERAS_BACKEND=tensorflow")
        import tensorflow as tf

        boxes = tf.cast(boxes, tf.float32)
        scores = tf.cast(scores, tf.float32)
        batch, anchors, classes = tf.shape(scores)[0], tf.shape(scores)[1], scores.shape[-1]
        keep = self.max_detections
        # One NMS problem per (image, class): (B*K, A, 4) boxes and (B*K, A) scores.
        per_class_boxes = tf.reshape(tf.repeat(boxes[:, None], classes, axis=1), [-1, anchors, 4])
        per_class_scores = tf.reshape(tf.transpose(scores, [0, 2, 1]), [-1, anchors])
        index, count = tf.image.non_max_suppression_padded(
            per_class_boxes, per_class_scores, max_output_size=keep, iou_threshold=self.iou_threshold,
            score_threshold=self.score_threshold, pad_to_max_output_size=True)
        kept = tf.range(keep)[None, :] < count[:, None]
        kept_scores = tf.where(kept, tf.gather(per_class_scores, index, batch_dims=1), -1.0)
        kept_boxes = tf.gather(per_class_boxes, index, batch_dims=1)
        kept_classes = tf.broadcast_to(tf.range(classes)[:, None], [classes, keep])
        # The best `keep` of every class's survivors, per image. Validity travels as the mask itself, not as a
        # comparison with the -1 filler: full-integer quantization clamps -1 into the scores' range.
        flat_scores = tf.reshape(kept_scores, [batch, classes * keep])
        top_scores, top = tf.math.top_k(flat_scores, k=keep)
        valid = tf.gather(tf.reshape(kept, [batch, classes * keep]), top, batch_dims=1)
        out_boxes = tf.gather(tf.reshape(kept_boxes, [batch, classes * keep, 4]), top, batch_dims=1)
        out_classes = tf.gather(tf.reshape(kept_classes, [classes * keep]), top)
        return {"boxes": tf.where(valid[..., None], out_boxes, 0.0),
                "scores": tf.where(valid, top_scores, 0.0),
                "classes": tf.where(valid, out_classes, 0),
                "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)}

    def compute_output_spec(self, boxes, scores):
        batch, n = boxes.shape[0], self.max_detections
        return {"boxes": keras.KerasTensor((batch, n, 4), "float32"),
                "scores": keras.KerasTensor((batch, n), "float32"),
                "classes": keras.KerasTensor((batch, n), "int32"),
                "num_detections": keras.KerasTensor((batch,), "int32")}

    def get_config(self):
        return {**super().get_config(), "max_detections": self.max_detections,
                "iou_threshold": self.iou_threshold, "score_threshold": self.score_threshold}
