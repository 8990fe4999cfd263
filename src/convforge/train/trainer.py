"""Training a recipe: strategy and precision for the hardware, compile, fit with checkpoints, resume, report."""
import datetime
import json
import pathlib
import time

import keras
import tensorflow as tf

from convforge.errors import ConvforgeError, RecipeError
from convforge.tasks import get_task
from convforge.train.callbacks import EpochSummary, NonFiniteLoss, StopOnNonFiniteLoss, plot_history
from convforge.train.hardware import resolve_precision, resolve_strategy
from convforge.train.schedules import make_schedule

RUNS_DIR = "runs"


def new_run_dir(name, root=RUNS_DIR):
    """Return a fresh runs/<name>/<timestamp>/ folder (created)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path(root) / name / stamp
    suffix = 1
    while path.exists():
        path = pathlib.Path(root) / name / f"{stamp}-{suffix}"
        suffix += 1
    path.mkdir(parents=True)
    return path


def latest_run_dir(name, root=RUNS_DIR):
    """Return the newest run folder of a recipe name, or None."""
    runs = sorted(p for p in (pathlib.Path(root) / name).glob("*") if p.is_dir())
    return runs[-1] if runs else None


def _initial_epoch(backup_dir):
    """The epoch a BackupAndRestore folder will resume from (0 when there is nothing to resume)."""
    meta = pathlib.Path(backup_dir) / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def make_optimizer(train_cfg, steps_per_epoch):
    """Build the recipe's Keras optimizer with its learning-rate schedule."""
    kwargs = dict(train_cfg.optimizer.kwargs)
    lr = kwargs.pop("learning_rate")
    kwargs["learning_rate"] = make_schedule(train_cfg.schedule, lr, steps_per_epoch, train_cfg.epochs)
    config = {"class_name": train_cfg.optimizer.name, "config": kwargs}
    return keras.optimizers.get(config)


def _weights_into(model, path):
    """Load starting weights from a .keras or .weights.h5 file, naming the file when it does not fit."""
    try:
        if str(path).endswith(".keras"):
            source = keras.models.load_model(path, compile=False, safe_mode=True)
            model.set_weights(source.get_weights())
        else:
            model.load_weights(path)
    except (ValueError, OSError) as err:
        raise RecipeError(f"model.weights: {path} does not fit this model: {str(err).splitlines()[0]}") from err


def _metric_names(logs):
    """Rename Keras' per-output metric names to the task's plain ones (predictions_accuracy -> accuracy)."""
    out = {}
    for key, value in logs.items():
        prefix = "val_" if key.startswith("val_") else ""
        base = key[len(prefix):]
        if base.startswith("predictions_"):
            base = base[len("predictions_"):]
        out[prefix + base] = float(value)
    return out


def train(recipe, run_dir=None, resume=False, printer=print, verbose=1):
    """Train a validated Recipe; returns {"run_dir", "model_path", "metrics"} and prints the run dir last.

    resume: continue the newest run of this recipe (True) or the given run folder from its last finished
    epoch. A NaN loss stops the run with ConvforgeError and keeps the last good checkpoint.
    """
    from convforge.train.datasets import datasets_for_recipe, input_shape_of

    train_cfg = recipe.train
    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = resolve_precision(train_cfg.precision)
    strategy = resolve_strategy(train_cfg.distribution)

    if resume:
        run_dir = pathlib.Path(run_dir) if run_dir else latest_run_dir(recipe.name)
        if run_dir is None or not (run_dir / "backup").exists():
            raise ConvforgeError(f"nothing to resume for recipe {recipe.name!r}: no run folder with a backup "
                                 f"under {RUNS_DIR}/{recipe.name}/")
    else:
        run_dir = pathlib.Path(run_dir) if run_dir else new_run_dir(recipe.name)
        run_dir.mkdir(parents=True, exist_ok=True)
    backup_dir = run_dir / "backup"
    initial_epoch = _initial_epoch(backup_dir)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())

    task = get_task(recipe.task)
    data = datasets_for_recipe(recipe, task, skip_epochs=initial_epoch)
    num_classes = recipe.model.num_classes or len(data.class_names)
    input_shape = input_shape_of(recipe)
    printer(f"{recipe.name}: {recipe.model.architecture} for {recipe.task}, {num_classes} classes, "
            f"input {input_shape}, precision {policy}, strategy {type(strategy).__name__}, "
            f"{data.train_count} train / {data.val_count} val images")

    with strategy.scope():
        model = task.build_model(recipe.model.architecture, input_shape, num_classes, recipe.model.options,
                                 dtype=policy)
        if recipe.model.weights:
            _weights_into(model, recipe.model.weights)
        optimizer = make_optimizer(train_cfg, data.steps_per_epoch)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, **task.compile_args(
            model, label_smoothing=train_cfg.label_smoothing, one_hot=data.one_hot,
            aux_loss_weight=train_cfg.aux_loss_weight))

    train_ds = data.train.map(lambda x, y: (x, task.adapt_targets(model, y)))
    val_ds = data.val.map(lambda x, y: (x, task.adapt_targets(model, y))) if data.val is not None else None
    nan_guard = StopOnNonFiniteLoss()
    monitor = "val_loss" if val_ds is not None else "loss"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True, delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor=monitor, save_best_only=True),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
        nan_guard,
        EpochSummary(train_cfg.epochs, printer),
    ]
    if train_cfg.early_stopping:
        es = train_cfg.early_stopping
        callbacks.append(keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode,
                                                       min_delta=es.min_delta,
                                                       restore_best_weights=es.restore_best_weights))
    if initial_epoch:
        printer(f"resuming {run_dir} from epoch {initial_epoch + 1}/{train_cfg.epochs}")
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=train_cfg.epochs,
                        steps_per_epoch=data.steps_per_epoch, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    if nan_guard.bad is not None:
        epoch, batch, loss = nan_guard.bad
        raise NonFiniteLoss(f"{recipe.name}: loss became {loss} at epoch {epoch + 1}, batch {batch + 1}; "
                            f"stopped, the last good checkpoint is kept in {backup_dir} (lower "
                            "train.optimizer.learning_rate or check the data)")

    inference = task.inference_model(model)
    model_path = run_dir / "model.keras"
    inference.save(model_path)
    epochs_done = _initial_epoch(backup_dir) or (initial_epoch + len(history.epoch))
    logs = {k: v[-1] for k, v in history.history.items()} if history.epoch else {}
    metrics = {**_metric_names(logs), "epochs_completed": epochs_done, "seconds": round(seconds, 2)}
    if data.val is not None:
        extra = task.evaluate(inference, data.val, data.class_names, out_dir=run_dir)
        metrics.update({f"val_{k}": v for k, v in extra.items() if k != "confusion_matrix"})
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (run_dir / "class_names.json").write_text(json.dumps(data.class_names))
    (run_dir / "preprocessing.json").write_text(json.dumps(data.preprocessing))
    if (run_dir / "history.csv").exists():
        plot_history(run_dir / "history.csv", run_dir / "training_curves.png")
    printer(f"model: {model_path}")
    printer(str(run_dir))
    return {"run_dir": str(run_dir), "model_path": str(model_path), "metrics": metrics}

