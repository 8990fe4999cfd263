"""ONNX conversion with tf2onnx from the frozen serving function.

tf2onnx's own `from_function` cannot see inside functions marked for XLA: Keras' TF backend runs grouped
convolutions (and 3-D channels-first ones) through `tf.function(jit_compile=True)` on CPU, and grappler
refuses to inline such a call, so tf2onnx meets an opaque StatefulPartitionedCall. We freeze the function
ourselves, lift the XLA marks so grappler inlines the body, and hand tf2onnx a plain GraphDef.
"""
import logging
import re

from convforge.errors import ExportError
from convforge.export.formats import FORMATS
from convforge.export.saved_model import INPUT_NAME

ONNX_FILE = FORMATS["onnx"].file
_XLA_ATTRS = ("_XlaMustCompile", "_noinline")


def _inlinable(graph_def):
    """Drop the attributes that stop grappler from inlining XLA-compiled function calls."""
    for function in graph_def.library.function:
        for key in _XLA_ATTRS:
            if key in function.attr:
                del function.attr[key]
        for node in function.node_def:
            if "_XlaMustCompile" in node.attr:
                del node.attr["_XlaMustCompile"]
    for node in graph_def.node:
        if "_XlaMustCompile" in node.attr:
            del node.attr["_XlaMustCompile"]
    return graph_def


def _name_batch_axis(model_proto):
    """Call the leading dimension of the input and every output `batch` (tf2onnx leaves it `unk__N`)."""
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def convert_onnx(serve, opset=17):
    """Return the checked ONNX ModelProto of `serve` (the float32 serving function) at `opset`."""
    import onnx
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = serve.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    graph_def = _inlinable(frozen.graph.as_graph_def(add_shapes=True))
    # tf.nest flattens a dict of outputs in sorted-key order, which is the order of the frozen outputs.
    names = sorted(concrete.structured_outputs)
    outputs = [t.name for t in frozen.outputs]
    inputs = [t.name for t in frozen.inputs]
    rename = {inputs[0]: INPUT_NAME, **dict(zip(outputs, names))}

    # tf2onnx logs each unmapped op and optimizer pass, TF its own deprecations; the error below says enough.
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        model_proto, _ = tf2onnx.convert.from_graph_def(graph_def, name="convforge", input_names=inputs,
                                                        output_names=outputs, opset=opset,
                                                        tensors_to_rename=rename)
    except Exception as error:
        raise _conversion_error(str(error), opset) from None
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    _name_batch_axis(model_proto)
    try:
        onnx.checker.check_model(model_proto)
    except onnx.checker.ValidationError as error:
        # tf2onnx only logs the ops it cannot map and leaves them in the graph, where the checker finds them.
        ops = sorted(set(re.findall(r"No Op registered for (\w+)", str(error))))
        if ops:
            raise ExportError(f"onnx: tf2onnx cannot map the TensorFlow op(s) {', '.join(ops)} at opset {opset}; "
                              f"accepted: a model without them (or another opset that maps them)") from None
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise ExportError(f"onnx: the converted graph fails onnx.checker at opset {opset} ({first[:300]}); "
                          f"accepted: a model whose TensorFlow ops tf2onnx maps to ONNX") from None
    return model_proto


def _conversion_error(message, opset):
    """Turn a tf2onnx failure into one ExportError sentence naming the unmapped ops when it says them."""
    ops = re.findall(r"'(\w+)'", "".join(re.findall(r"Counter\(\{([^}]*)\}\)", message)))
    ops = ops or re.findall(r"Tensorflow op \[[^:]*: (\w+)\] is not supported", message)
    if ops:
        return ExportError(f"onnx: tf2onnx cannot map the TensorFlow op(s) {', '.join(sorted(set(ops)))} at "
                           f"opset {opset}; accepted: a higher opset or a model without them")
    first = next((line.strip() for line in message.splitlines() if line.strip()), "unknown error")
    return ExportError(f"onnx: tf2onnx failed at opset {opset} ({first[:300]}); accepted: a model of "
                       f"TensorFlow ops tf2onnx maps to ONNX")
