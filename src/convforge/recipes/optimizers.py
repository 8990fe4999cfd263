"""The Keras optimizers a recipe may name, with every constructor argument and its default, as data.

Read from Keras 3.15 (the version setup.py pins) so that validating a recipe needs no Keras import; a test
compares it with the installed Keras, so a Keras upgrade that adds, drops or changes an argument fails there
instead of drifting. Regenerate with `python -m convforge.recipes.optimizers` after such an upgrade.
"""

# name as keras.optimizers.get resolves it: (class name, {argument: default})
OPTIMIZERS = {
    'adadelta': ('Adadelta', {
        'learning_rate': 0.001, 'rho': 0.95, 'epsilon': 1e-07, 'weight_decay': None, 'clipnorm': None,
        'clipvalue': None, 'global_clipnorm': None, 'use_ema': False, 'ema_momentum': 0.99,
        'ema_overwrite_frequency': None, 'loss_scale_factor': None, 'gradient_accumulation_steps': None}),
    'adafactor': ('Adafactor', {
        'learning_rate': 0.001, 'beta_2_decay': -0.8, 'epsilon_1': 1e-30, 'epsilon_2': 0.001, 'clip_threshold':
        1.0, 'relative_step': True, 'weight_decay': None, 'clipnorm': None, 'clipvalue': None,
        'global_clipnorm': None, 'use_ema': False, 'ema_momentum': 0.99, 'ema_overwrite_frequency': None,
        'loss_scale_factor': None, 'gradient_accumulation_steps': None}),
    'adagrad': ('Adagrad', {
        'learning_rate': 0.001, 'initial_accumulator_value': 0.1, 'epsilon': 1e-07, 'weight_decay': None,
        'clipnorm': None, 'clipvalue': None, 'global_clipnorm': None, 'use_ema': False, 'ema_momentum': 0.99,
        'ema_overwrite_frequency': None, 'loss_scale_factor': None, 'gradient_accumulation_steps': None}),
    'adam': ('Adam', {
        'learning_rate': 0.001, 'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-07, 'amsgrad': False,
        'weight_decay': None, 'clipnorm': None, 'clipvalue': None, 'global_clipnorm': None, 'use_ema': False,
        'ema_momentum': 0.99, 'ema_overwrite_frequency': None, 'loss_scale_factor': None,
        'gradient_accumulation_steps': None}),
    'adamax': ('Adamax', {
        'learning_rate': 0.001, 'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-07, 'weight_decay': None,
        'clipnorm': None, 'clipvalue': None, 'global_clipnorm': None, 'use_ema': False, 'ema_momentum': 0.99,
        'ema_overwrite_frequency': None, 'loss_scale_factor': None, 'gradient_accumulation_steps': None}),
    'adamw': ('AdamW', {
        'learning_rate': 0.001, 'weight_decay': 0.004, 'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-07,
        'amsgrad': False, 'clipnorm': None, 'clipvalue': None, 'global_clipnorm': None, 'use_ema': False,
        'ema_momentum': 0.99, 'ema_overwrite_frequency': None, 'loss_scale_factor': None,
        'gradient_accumulation_steps': None}),
    'ftrl': ('Ftrl', {
        'learning_rate': 0.001, 'learning_rate_power': -0.5, 'initial_accumulator_value': 0.1,
        'l1_regularization_strength': 0.0, 'l2_regularization_strength': 0.0,
        'l2_shrinkage_regularization_strength': 0.0, 'beta': 0.0, 'weight_decay': None, 'clipnorm': None,
        'clipvalue': None, 'global_clipnorm': None, 'use_ema': False, 'ema_momentum': 0.99,
        'ema_overwrite_frequency': None, 'loss_scale_factor': None, 'gradient_accumulation_steps': None}),
    'lion': ('Lion', {
        'learning_rate': 0.001, 'beta_1': 0.9, 'beta_2': 0.99, 'weight_decay': None, 'clipnorm': None,
        'clipvalue': None, 'global_clipnorm': None, 'use_ema': False, 'ema_momentum': 0.99,
        'ema_overwrite_frequency': None, 'loss_scale_factor': None, 'gradient_accumulation_steps': None}),
    'muon': ('Muon', {
        'learning_rate': 0.001, 'adam_beta_1': 0.9, 'adam_beta_2': 0.999, 'adam_weight_decay': 0.004, 'epsilon':
        1e-07, 'weight_decay': 0.004, 'clipnorm': None, 'clipvalue': None, 'global_clipnorm': None, 'use_ema':
        False, 'ema_momentum': 0.99, 'ema_overwrite_frequency': None, 'loss_scale_factor': None,
        'gradient_accumulation_steps': None, 'exclude_layers': None, 'exclude_embeddings': True, 'muon_a':
        3.4445, 'muon_b': -4.775, 'muon_c': 2.0315, 'adam_lr_ratio': 1, 'momentum': 0.95, 'ns_steps': 5,
        'nesterov': True, 'rms_rate': 0.2}),
    'nadam': ('Nadam', {
        'learning_rate': 0.001, 'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-07, 'weight_decay': None,
        'clipnorm': None, 'clipvalue': None, 'global_clipnorm': None, 'use_ema': False, 'ema_momentum': 0.99,
        'ema_overwrite_frequency': None, 'loss_scale_factor': None, 'gradient_accumulation_steps': None}),
    'rmsprop': ('RMSprop', {
        'learning_rate': 0.001, 'rho': 0.9, 'momentum': 0.0, 'epsilon': 1e-07, 'centered': False,
        'weight_decay': None, 'clipnorm': None, 'clipvalue': None, 'global_clipnorm': None, 'use_ema': False,
        'ema_momentum': 0.99, 'ema_overwrite_frequency': None, 'loss_scale_factor': None,
        'gradient_accumulation_steps': None}),
    'schedulefreeadamw': ('ScheduleFreeAdamW', {
        'learning_rate': 0.0025, 'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-08, 'warmup_steps': 0,
        'weight_decay': None, 'clipnorm': None, 'clipvalue': None, 'global_clipnorm': None, 'use_ema': False,
        'ema_momentum': 0.99, 'ema_overwrite_frequency': None, 'loss_scale_factor': None,
        'gradient_accumulation_steps': None}),
    'sgd': ('SGD', {
        'learning_rate': 0.01, 'momentum': 0.0, 'nesterov': False, 'weight_decay': None, 'clipnorm': None,
        'clipvalue': None, 'global_clipnorm': None, 'use_ema': False, 'ema_momentum': 0.99,
        'ema_overwrite_frequency': None, 'loss_scale_factor': None, 'gradient_accumulation_steps': None}),
}
# Optional arguments Keras leaves at None that take a list of names rather than a number.
LIST_ARGUMENTS = ("exclude_layers",)


def live_table():
    """The same table read from the installed Keras (imports it): {name: (class name, {argument: default})}."""
    import inspect

    import keras

    try:
        # The table get() consults; a public class missing from it (Lamb in Keras 3.15) cannot be named.
        from keras.src.optimizers import ALL_OBJECTS_DICT as resolvable
    except ImportError:
        resolvable = None
    table = {}
    for attr in dir(keras.optimizers):
        cls = getattr(keras.optimizers, attr)
        if (inspect.isclass(cls) and issubclass(cls, keras.optimizers.Optimizer)
                and attr not in ("Optimizer", "LossScaleOptimizer", "MultiOptimizer", "OptimizerMap")
                and (resolvable is None or attr.lower() in resolvable)):
            params = inspect.signature(cls).parameters
            table[attr.lower()] = (attr, {p: v.default for p, v in params.items()
                                          if p != "name" and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)})
    return dict(sorted(table.items()))


if __name__ == "__main__":
    for key, (cls, arguments) in live_table().items():
        print(f"    {key!r}: ({cls!r}, {arguments!r}),")
