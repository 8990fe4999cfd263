"""Training a recipe: strategy and precision for the hardware, compile, fit with checkpoints, resume, report."""
import csv
import datetime
import json
import pathlib
import shutil
import tempfile
import warnings

import keras
import tensorflow as tf

from convforge.atomic import write_json
from convforge.errors import ConvforgeError, RecipeError
from convforge.tasks import get_task
from convforge.train.callbacks import (EpochSummary, EpochTimes, GuardedBackupAndRestore, GuardedCSVLogger,
                                       GuardedModelCheckpoint, NonFiniteLoss, StopOnNonFiniteLoss, plot_history)
from convforge.train.hardware import fit_across_workers, resolve_precision, resolve_strategy
from convforge.train.schedules import make_schedule
from convforge.timing import Stopwatch

RUNS_DIR = "runs"


def new_run_dir(name, root=RUNS_DIR, create=True):
    """Return a fresh runs/<name>/<timestamp>/ folder (created unless create=False: the trainer creates it once
    the data and the model are built, so a refused run leaves no empty folder)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path(root) / name / stamp
    suffix = 1
    while path.exists():
        path = pathlib.Path(root) / name / f"{stamp}-{suffix}"
        suffix += 1
    if create:
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


def _keep_finished_epochs(history_csv, epochs):
    """Drop the rows of epochs a killed run logged after its last backup, so a resumed log has each epoch once."""
    path = pathlib.Path(history_csv)
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < epochs]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept)


def is_chief(strategy):
    """Whether this process writes the run's artifacts (False only for non-chief multi-worker workers)."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def _shard_by_data(dataset):
    """Shard across workers by element: our sources are in memory or cached, so FILE sharding cannot apply
    (the AUTO policy would try it, warn and fall back to DATA)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _inference_copy(model):
    """The model to save as model.keras: the same layers and weights, without the training-only optimizer,
    schedule and losses, so `keras.models.load_model` needs no convforge training code to read it. A single
    input stays a single tensor (GoogLeNet's strip_aux hands back a one-element input list)."""
    inputs = model.input  # a dict of named inputs (AdaIN's content and style) stays a dict
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        inputs = inputs[0]
    return keras.Model(inputs, model.output, name=model.name)


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

    Under MultiWorkerMirroredStrategy (train.distribution multi_worker, or auto with a TF_CONFIG of several
    workers) every worker runs this same function; only the chief writes into run_dir, the others write
    their copies (which they must, to take part in the collective reads of saving) into a temporary folder
    removed at the end. Resuming a multi-worker run needs run_dir on a filesystem every worker sees.
    """
    train_cfg = recipe.train
    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = resolve_precision(train_cfg.precision)
    strategy = resolve_strategy(train_cfg.distribution)

    chief = is_chief(strategy)
    if resume:
        run_dir = pathlib.Path(run_dir) if run_dir else latest_run_dir(recipe.name)
        if run_dir is None or not (run_dir / "backup").exists():
            where = run_dir if run_dir is not None else f"{RUNS_DIR}/{recipe.name}/"
            raise ConvforgeError(f"nothing to resume for recipe {recipe.name!r}: no run folder with a backup "
                                 f"at {where}")
    elif chief:
        run_dir = pathlib.Path(run_dir) if run_dir else new_run_dir(recipe.name, create=False)
        if (run_dir / "backup").exists():
            # Keras would silently continue from it; starting afresh over it would mix two runs.
            raise ConvforgeError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                                 "(Python: resume=True) or choose another run folder")
    initial_epoch = _initial_epoch(run_dir / "backup") if resume else 0
    # Where this process writes: the run folder for the chief, a scratch copy for the other workers.
    out_dir = run_dir if chief else pathlib.Path(tempfile.mkdtemp(prefix="convforge-worker-"))
    try:
        if not chief and resume:
            shutil.copytree(run_dir / "backup", out_dir / "backup")
        result = _fit(recipe, train_cfg, policy, strategy, out_dir, initial_epoch, printer, verbose)
    finally:
        if not chief:
            shutil.rmtree(out_dir, ignore_errors=True)
    if chief:
        printer(f"model: {result['model_path']}")
    else:
        result = {**result, "run_dir": str(run_dir) if run_dir else None, "model_path": None}
    printer(str(run_dir) if run_dir is not None else "worker done; the chief wrote the run")
    return result


def _fit(recipe, train_cfg, policy, strategy, run_dir, initial_epoch, printer, verbose):
    """Build, compile and fit under the strategy, writing checkpoints, logs and results into run_dir."""
    from convforge.train.datasets import datasets_for_recipe, input_shape_of

    backup_dir = run_dir / "backup"
    task = get_task(recipe.task, recipe.head)
    data = datasets_for_recipe(recipe, task, skip_epochs=initial_epoch)
    num_classes = recipe.model.num_classes or len(data.class_names)
    input_shape = input_shape_of(recipe)
    networks = recipe.model.architecture or recipe.head.get("name", "its own networks")
    printer(f"{recipe.name}: {networks} for {recipe.task}, {num_classes} classes, "
            f"input {input_shape}, precision {policy}, strategy {type(strategy).__name__} "
            f"({strategy.num_replicas_in_sync} replicas), "
            f"{data.train_count} train / {data.val_count} val {'crops' if task.parser.views else 'images'}")

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
    if train_cfg.adversarial is not None:
        from convforge.train.adversarial import train_adversarially

        train_adversarially(model, data.preprocessing, train_cfg.adversarial, seed=train_cfg.seed)
        printer(f"adversarial training: PGD {train_cfg.adversarial.norm} eps={train_cfg.adversarial.eps:g}, "
                f"{train_cfg.adversarial.steps} steps, on {train_cfg.adversarial.mix:.0%} of each batch")
    fit_across_workers(model, strategy)
    # The data and the model are built: from here on the run exists.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())

    train_ds = _shard_by_data(data.train.map(lambda x, y: task.pair(model, x, y)))
    val_ds = (_shard_by_data(data.val.map(lambda x, y: task.pair(model, x, y)))
              if data.val is not None else None)
    if getattr(model, "_distribute_strategy", None) is None and hasattr(model, "_symbolic_build"):
        # Build losses, metrics and optimizer slots now, from the batch's shapes (Keras does this itself only
        # under a distribution strategy): left to the first traced step they would be variables created inside
        # tf.function, which makes TensorFlow trace the whole training step twice (densenet121: 105 s -> 43 s).
        model._symbolic_build(data_batch=train_ds.element_spec)
    nan_guard = StopOnNonFiniteLoss()
    monitor = "val_loss" if val_ds is not None else "loss"
    if initial_epoch:
        _keep_finished_epochs(run_dir / "history.csv", initial_epoch)
        _keep_finished_epochs(run_dir / "epoch_times.csv", initial_epoch)
    # Order matters at each epoch end: the guard first (it decides whether the epoch is good), the log and
    # the best model before the backup, so a kill after a backup never loses an epoch's history row.
    callbacks = [
        nan_guard,
        GuardedCSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0, guard=nan_guard),
        EpochTimes(run_dir / "epoch_times.csv", append=initial_epoch > 0, guard=nan_guard),
        GuardedModelCheckpoint(str(run_dir / "best.keras"), monitor=monitor, save_best_only=True, guard=nan_guard),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
        GuardedBackupAndRestore(str(backup_dir), guard=nan_guard, double_checkpoint=True, delete_checkpoint=False),
        EpochSummary(train_cfg.epochs, printer),
        *task.callbacks(model, data, run_dir),
    ]
    if train_cfg.early_stopping:
        es = train_cfg.early_stopping
        callbacks.append(keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode,
                                                       min_delta=es.min_delta,
                                                       restore_best_weights=es.restore_best_weights))
    if initial_epoch:
        printer(f"resuming {run_dir} from epoch {initial_epoch + 1}/{train_cfg.epochs}")
    clock = Stopwatch()
    with warnings.catch_warnings():
        # The val set's length is unknown to tf.data until its first pass ends, which Keras reports as
        # "ran out of data"; the train set repeats forever, so the warning never means lost training steps.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(train_ds, validation_data=val_ds, epochs=train_cfg.epochs,
                            steps_per_epoch=data.steps_per_epoch, callbacks=callbacks, verbose=verbose,
                            shuffle=False)
    seconds = clock.seconds
    if nan_guard.bad is not None:
        epoch, batch, loss = nan_guard.bad
        kept = _initial_epoch(backup_dir)
        where = (f"the checkpoint of epoch {kept} is kept in {backup_dir}" if kept else
                 "no epoch had finished, so there is no checkpoint")
        raise NonFiniteLoss(f"{recipe.name}: loss became {loss} at epoch {epoch + 1}, batch {batch + 1}; "
                            f"stopped, {where} (lower train.optimizer.learning_rate or check the data)")

    inference = _inference_copy(task.inference_model(model))
    model_path = run_dir / "model.keras"
    inference.save(model_path)
    for file_name, other in task.other_models(model).items():
        _inference_copy(other).save(run_dir / file_name)
    epochs_done = _initial_epoch(backup_dir) or (initial_epoch + len(history.epoch))
    logs = {k: v[-1] for k, v in history.history.items()} if history.epoch else {}
    metrics = {**_metric_names(logs), "epochs_completed": epochs_done, "seconds": round(seconds, 2),
               "replicas": int(strategy.num_replicas_in_sync), "strategy": type(strategy).__name__,
               "precision": policy}
    if data.val is not None:
        # Crops (a parser's views) are scored in their images' terms, which only the records give; other tasks
        # keep training's light evaluation on the pipeline's own targets (`convforge evaluate` reads records).
        source = data.val_source if task.parser.views else None
        extra = task.evaluate(inference, data.val, data.class_names, out_dir=run_dir, source=source)
        metrics.update({f"val_{k}": v for k, v in extra.items() if k != "confusion_matrix"})
        if train_cfg.adversarial is not None:
            from convforge.train.adversarial import robust_accuracy

            robust = robust_accuracy(inference, data.val, data.preprocessing, train_cfg.adversarial)
            metrics.update({f"val_{k}": v for k, v in robust.items()})
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "class_names.json", data.class_names, indent=None)
    write_json(run_dir / "preprocessing.json", data.preprocessing, indent=None)
    if (run_dir / "history.csv").exists():
        plot_history(run_dir / "history.csv", run_dir / "training_curves.png")
    return {"run_dir": str(run_dir), "model_path": str(model_path), "metrics": metrics}

