"""How numbers are written in tables and progress lines, one way everywhere."""


def si(n, digits=3):
    """A count with an SI suffix to `digits` significant figures: 61706 -> '61.7K', 1.82e9 -> '1.82G'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.{digits}g}{unit}"
    return f"{n:g}"


def sig(value, digits=3, missing="-"):
    """A measured number to `digits` significant figures (whole when larger); `missing` when there is none."""
    if value is None:
        return missing
    if not isinstance(value, float):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def metric(value, higher_is_better=True):
    """A task metric: scores (accuracy, AP, IoU; higher is better) as percentages, errors and losses (NME, a
    perceptual loss; lower is better) as numbers: 0.9531 -> '95.31%', 0.0487 -> '0.0487'."""
    return f"{value:.2%}" if higher_is_better else f"{value:.4g}"


def cell(value, fmt="{}"):
    """A table cell: the value formatted, '–' where nothing was measured."""
    return "–" if value is None else fmt.format(value)
