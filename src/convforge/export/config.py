"""What one export is asked to do: the options of `convforge.export`, checked once and passed as one object."""
import dataclasses
from typing import Any, Callable

from convforge.errors import ExportError, close_matches
from convforge.export.formats import DEFAULT_FORMATS, NAMES as FORMATS
from convforge.export.tflite import INT8_IO


# Where a detector's NMS runs: inside every artifact, or in Python on the artifacts' outputs (apply_nms).
NMS_PLACES = ("graph", "python")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The options of one export (see `convforge.export` for each); formats, int8_io and the metric are checked
    and defaulted on construction."""

    formats: tuple = DEFAULT_FORMATS
    representative: Any = None
    preprocessing: dict | None = None
    with_preprocessing: bool = False
    output_names: Any = None
    allow_flex: bool = False
    opset: int = 17
    verify: bool = True
    max_abs_diff: float = 1e-4
    inputs_for_check: Any = None
    progress: Callable | None = print
    int8_io: str = "int8"
    latency_runs: int = 10
    threads: int = 1
    source: dict | None = None
    validation: Any = None
    metric: Callable | None = None
    metric_name: str = "accuracy"
    higher_is_better: bool = True
    max_metric_drop: dict | None = None
    fail_on_drop: bool = True
    validation_size: int = 1000
    labels: Any = None
    nms: str = "graph"

    def __post_init__(self):
        object.__setattr__(self, "formats", check_formats(self.formats))
        if self.nms not in NMS_PLACES:
            raise ExportError(f"nms={self.nms!r} is not accepted; accepted: {', '.join(NMS_PLACES)}")
        if self.int8_io not in INT8_IO:
            raise ExportError(f"int8_io={self.int8_io!r} is not accepted; accepted: {', '.join(INT8_IO)}")
        if self.metric is None:
            from convforge.export.judge import top1_accuracy

            object.__setattr__(self, "metric", top1_accuracy)

    def say(self, line):
        """Report one progress line (nothing when progress is None)."""
        if self.progress:
            self.progress(line)


def check_formats(formats):
    """Return the requested formats as a tuple without repeats, or raise ExportError naming an unknown one."""
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    if not formats:
        raise ExportError(f"formats is empty; accepted: one or more of {', '.join(FORMATS)}")
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"format {fmt!r} is unknown{close_matches(fmt, FORMATS)}; accepted: "
                              f"{', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))
