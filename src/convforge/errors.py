"""The errors convforge raises for bad input; the CLI turns each into one line and exit code 2."""
import difflib


class ConvforgeError(ValueError):
    """A problem with what the user asked for, explained in one sentence."""


class ModelError(ConvforgeError):
    """An unknown architecture, a bad builder argument or an input the architecture cannot take."""


class RecipeError(ConvforgeError):
    """A recipe field that is missing, unknown or of the wrong type or value."""


class DataError(ConvforgeError):
    """A dataset that is missing, unreadable or empty."""


class ExportError(ConvforgeError):
    """An artifact that could not be written or failed its verification."""


def close_matches(value, accepted, n=3):
    """Return a ' (did you mean ...?)' hint for a misspelled value, or '' when nothing is close."""
    matches = difflib.get_close_matches(str(value), [str(a) for a in accepted], n=n, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


def one_line(error, limit=300):
    """An exception as one short line (its type and first non-empty line), for a table cell or a progress line."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {text}"[:limit]
