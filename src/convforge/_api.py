"""Plumbing of the public API: packages that are also callable as their main function."""
import sys
import types


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
