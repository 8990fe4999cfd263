"""TFLite conversion from a SavedModel: fp32, fp16 weights, dynamic-range int8 and full-integer int8.

Conversion starts from the staged SavedModel (as Keras' own LiteRT exporter does): from_concrete_functions
keeps Keras variables as resource variables in TF 2.21, which the quantizers cannot fold.
"""
import re

import numpy as np

from convforge.errors import ExportError
from convforge.export.formats import FORMATS, TFLITE_FORMATS  # noqa: F401  (TFLITE_FORMATS: for callers)

INT8_IO = ("int8", "uint8")


def missing_ops(message):
    """Return (flex_ops, custom_ops): the op names a converter error says builtins cannot hold."""
    flex, custom = [], []
    for label, found in ((r"TF Select ops", flex), (r"Custom ops", custom)):
        for match in re.finditer(label + r":\s*([^\n]+)", message):
            found.extend(op.strip() for op in match.group(1).split(",") if op.strip())
    if not flex and not custom:
        # Older or shorter messages only name the op in its MLIR form: 'tf.Erf' op is neither ...
        custom = re.findall(r"'tfl?\.(\w+)' op is neither a custom op nor a flex op", message)
    return sorted(set(flex)), sorted(set(custom))


def _representative_gen(images):
    """Yield one-image batches: calibration of a dynamic-batch input runs at batch 1."""
    def gen():
        """The converter's representative_dataset."""
        for image in images:
            yield [np.asarray(image, dtype=np.float32)[None]]
    return gen


def convert_tflite(saved_model_dir, fmt, representative=None, allow_flex=False, int8_io="int8", float_ops=(),
                   custom_ops=()):
    """Return the bytes of `fmt` (a key of TFLITE_FORMATS) converted from a SavedModel's serving_default.

    float_ops: TFLite op names (e.g. "DIV") that full-integer quantization must leave in float32, for ops whose
    int8 kernels cannot run the model's values (NMS divides by IoU unions that int8 rounds to zero).
    custom_ops: the custom ops the graph is meant to hold (TFLite_Detection_PostProcess, which the stock
    interpreter registers); any other custom op is still refused."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=["serving_default"])
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if fmt == "tflite_int8" else tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    if FORMATS[fmt].quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.allow_custom_ops = bool(custom_ops)
    if fmt == "tflite_fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite_int8":
        if representative is None or len(representative) == 0:
            raise ExportError("tflite_int8 needs calibration images; accepted: representative= an array or "
                              "iterable of float32 input batches normalized like the training data")
        if int8_io not in INT8_IO:
            raise ExportError(f"int8_io={int8_io!r} is not accepted; accepted: {', '.join(INT8_IO)}")
        converter.representative_dataset = _representative_gen(representative)
        converter.inference_input_type = getattr(tf, int8_io)
        converter.inference_output_type = getattr(tf, int8_io)
    if fmt == "tflite_int8" and float_ops and int8_io != "int8":
        raise ExportError(f"tflite_int8 keeps {', '.join(float_ops)} in float32 for this model, and that quantizer "
                          f"gives int8 input and outputs only; accepted: int8_io='int8'")
    try:
        if fmt == "tflite_int8" and float_ops:
            return _quantize_except(converter, representative, float_ops)
        data = converter.convert()
    except Exception as error:  # the converter raises ConverterError, RuntimeError or ValueError
        raise _conversion_error(fmt, str(error), allow_flex) from None
    # Select TF ops travel as custom codes "Flex<Op>", which allow_flex asked for.
    unexpected = sorted(op for op in set(custom_op_names(data)) - set(custom_ops)
                        if not (allow_flex and op.startswith("Flex")))
    if unexpected:
        raise ExportError(f"{fmt}: the converted graph holds the custom op(s) {', '.join(unexpected)}, which the "
                          f"stock LiteRT interpreter does not register; accepted: a model of TFLite builtin ops")
    return data


def custom_op_names(data):
    """The custom op codes a .tflite flatbuffer holds (e.g. TFLite_Detection_PostProcess)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    return [code.customCode.decode() for code in model.operatorCodes or () if code.customCode]


def float_op_types(data):
    """The op types of a .tflite flatbuffer that compute in float32 (a float32 input and output; QUANTIZE and
    DEQUANTIZE aside), sorted: in a full-int8 model, the ops TFLite could not quantize."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    found = set()
    for graph in model.subgraphs or ():
        for op in graph.operators or ():
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            inputs = [graph.tensors[i] for i in (op.inputs if op.inputs is not None else ()) if i >= 0]
            outputs = [graph.tensors[i] for i in (op.outputs if op.outputs is not None else ()) if i >= 0]
            floats = lambda ts: any(t.type == schema.TensorType.FLOAT32 for t in ts)  # noqa: E731
            if name not in ("QUANTIZE", "DEQUANTIZE") and floats(inputs) and floats(outputs):
                found.add(name)
    return sorted(found)


def _quantize_except(converter, representative, float_ops):
    """Full-integer quantization leaving the named op types in float32 (dequantized around them): TFLite's
    selective quantization, run through its QuantizationDebugger as the converter offers no other entry."""
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops), fully_quantize=True)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=_representative_gen(representative), debug_options=options)
    return debugger.get_nondebug_quantized_model()


def _conversion_error(fmt, message, allow_flex):
    """Turn a converter failure into one ExportError sentence that names the ops it could not hold."""
    flex, custom = missing_ops(message)
    if flex and not allow_flex:
        return ExportError(f"{fmt}: TFLite builtins cannot hold the TensorFlow op(s) {', '.join(flex)}; "
                           f"accepted: allow_flex=True (adds SELECT_TF_OPS; the runtime then needs the Flex "
                           f"delegate) or a model without them")
    if custom:
        return ExportError(f"{fmt}: neither TFLite builtins nor Flex (SELECT_TF_OPS) hold the op(s) "
                           f"{', '.join(custom)}; accepted: a model that expresses them with other ops")
    if flex:
        return ExportError(f"{fmt}: the op(s) {', '.join(flex)} have no {fmt} kernel even with Flex; accepted: "
                           f"another format or a model without them")
    first = next((line.strip() for line in message.splitlines() if line.strip()), "unknown error")
    return ExportError(f"{fmt}: the TFLite converter failed ({first[:300]}); accepted: a model of TFLite "
                       f"builtin ops")
