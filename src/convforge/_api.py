"""Plumbing of the public API: names imported on first use, and packages callable as their main function."""
import importlib
import sys
import types


def lazy_names(module_name, table):
    """Return a module `__getattr__` that imports `table[name]` (a module path) when `name` is first used."""

    def __getattr__(name):
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            setattr(sys.modules[module_name], name, value)
            return value
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


class _CallablePackage(types.ModuleType):
    """A package that forwards calls to the function named in its `__call_target__`."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__call_target__)(*args, **kwargs)


def callable_package(module_name, function_name):
    """Make package `module_name` callable as its function `function_name`.

    Importing a submodule (convforge.train.trainer) rebinds the parent's attribute (convforge.train) to the
    package, hiding a same-named API function; a callable package keeps `convforge.train(recipe)` working.
    """
    module = sys.modules[module_name]
    module.__call_target__ = function_name
    module.__class__ = _CallablePackage
