"""The export formats as one table: file name, precision, runtime, whether it is judged as quantized, and the
recipe field that bounds its metric drop. The recipe schema, the CLI, export, verify, judge, bench and the card
all read it; nothing else lists formats. Pure data: importing it loads neither TensorFlow nor a runtime.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Format:
    """One export format."""

    name: str
    file: str  # the artifact's name inside an export folder
    precision: str  # what its weights and activations are, for the card
    runtime: str  # the runtime verify and bench run it in
    quantized: bool = False  # judged by the task metric, not by the float32 tolerance
    drop_field: str | None = None  # the recipe's export field bounding its metric drop, in points
    default_max_drop: float | None = None
    detectors_only: bool = False  # holds a detector's post-processing, so other models cannot be exported to it


_ROWS = (
    Format("saved_model", "saved_model", "float32", "TensorFlow"),
    Format("tflite", "model.tflite", "float32", "LiteRT"),
    Format("tflite_fp16", "model_fp16.tflite", "float16 weights", "LiteRT", True, "fp16_max_accuracy_drop", 0.5),
    Format("tflite_dynamic", "model_dynamic.tflite", "int8 weights, dynamic-range activations", "LiteRT", True,
           "dynamic_max_accuracy_drop", 1.0),
    Format("tflite_int8", "model_int8.tflite", "int8 (full integer)", "LiteRT", True, "int8_max_accuracy_drop", 1.0),
    Format("onnx", "model.onnx", "float32", "ONNX Runtime"),
    Format("tflite_postprocess_op", "model_postprocess_op.tflite", "float32, NMS by TFLite_Detection_PostProcess",
           "LiteRT", detectors_only=True),
)
FORMATS = {row.name: row for row in _ROWS}
NAMES = tuple(FORMATS)
# What an export writes when not told: every format any image model can be exported to.
DEFAULT_FORMATS = tuple(name for name, row in FORMATS.items() if not row.detectors_only)
FP32_FORMATS = tuple(name for name, row in FORMATS.items() if not row.quantized)
QUANTIZED_FORMATS = tuple(name for name, row in FORMATS.items() if row.quantized)
TFLITE_FORMATS = {name: row.file for name, row in FORMATS.items() if row.runtime == "LiteRT"}
# What the float32 copy of a mixed-precision model may lose against the model as trained, in points.
FLOAT32_COPY_MAX_DROP = 1.0
DEFAULT_MAX_DROP = {**{name: row.default_max_drop for name, row in FORMATS.items() if row.quantized},
                    "float32_copy": FLOAT32_COPY_MAX_DROP}
