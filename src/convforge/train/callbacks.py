"""Training callbacks: a clear stop on NaN, a backup that never saves a NaN epoch, one summary line per epoch,
and the training-curve plot."""
import math
import time

import keras

from convforge.errors import ConvforgeError
from convforge.timing import Stopwatch


class NonFiniteLoss(ConvforgeError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first NaN/inf batch loss, remembering where, so the run can report it.

    Keras still ends the interrupted epoch (on_epoch_end runs after stop_training), so the backup callback
    must be a GuardedBackupAndRestore that asks this guard before saving; otherwise the NaN weights would
    overwrite the last good checkpoint and claim the bad epoch as finished.
    """

    def __init__(self):
        super().__init__()
        self.bad = None
        self._epoch = 0

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad = (self._epoch, batch, float(loss))
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


class _Guarded:
    """Mixin for a Keras callback: its epoch-end work is skipped once `guard` (a StopOnNonFiniteLoss) saw a bad
    loss, so a non-finite epoch is never saved over anything nor logged as if it were a result."""

    def __init__(self, *args, guard, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.bad is None:
            super().on_epoch_end(epoch, logs)


class GuardedBackupAndRestore(_Guarded, keras.callbacks.BackupAndRestore):
    """BackupAndRestore that never backs up a non-finite epoch."""


class GuardedModelCheckpoint(_Guarded, keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that never writes (or replaces best.keras with) a non-finite model."""


class GuardedCSVLogger(_Guarded, keras.callbacks.CSVLogger):
    """CSVLogger that leaves a non-finite epoch out of history.csv."""


class EpochSummary(keras.callbacks.Callback):
    """Print one line per epoch with every logged metric and the epoch's duration."""

    def __init__(self, epochs, printer=print):
        super().__init__()
        self.epochs, self.printer = epochs, printer

    def on_epoch_begin(self, epoch, logs=None):
        self._clock = Stopwatch()

    def on_epoch_end(self, epoch, logs=None):
        parts = [f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if isinstance(v, (int, float))]
        self.printer(f"epoch {epoch + 1}/{self.epochs} ({self._clock.seconds:.1f}s): "
                     + " ".join(parts))


class EpochTimes(_Guarded, keras.callbacks.Callback):
    """Append each finished epoch's wall seconds (validation included; the checkpoint writes after it, not) to a
    CSV beside history.csv, so a run's time-to-accuracy can be read back (`convforge compare`); rows are 0-based
    epochs like CSVLogger's, written before the backup so a resumed run keeps every finished epoch's row."""

    def __init__(self, path, append=False, guard=None):
        super().__init__(guard=guard or StopOnNonFiniteLoss())
        self.path, self.append = str(path), append

    def on_train_begin(self, logs=None):
        if not self.append:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write("epoch,seconds,end_time\n")

    def on_epoch_begin(self, epoch, logs=None):
        self._clock = Stopwatch()

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{epoch},{self._clock.seconds:.3f},{time.time():.3f}\n")


def plot_history(history_csv, out_png):
    """Plot every metric of a CSVLogger history (train and val on one panel per metric) as a PNG."""
    import csv

    from matplotlib.figure import Figure

    with open(history_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    keys = [k for k in rows[0] if k not in ("epoch", "learning_rate") and not k.startswith("val_")]
    fig = Figure(figsize=(4 * max(1, len(keys)), 3.2), dpi=100)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        ax.plot(epochs, [_number(r.get(key)) for r in rows], label="train")
        val = [_number(r.get(f"val_{key}")) for r in rows]
        # A run without a val split leaves CSVLogger's val_* cells empty or "NA": nothing to draw.
        if any(math.isfinite(v) for v in val):
            ax.plot(epochs, val, label="val")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    return out_png


def _number(text):
    """A CSV cell as a float; NaN for an empty or "NA" cell (matplotlib leaves a gap there)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan
