"""Import an object named by a dotted path: connector classes, user functions.

``load_object("package.module:attr", what)`` imports ``package.module`` and returns
``attr`` (itself possibly dotted: ``Class.method``). With ``dotted=True`` the form
``package.module.attr`` is accepted too (the last part is the attribute). Every
failure is a ``ConfigError`` (or the ``error`` class given) that starts with
``what`` and says which part failed: the form, the import (with the module's own
error), or the attribute.
"""

from __future__ import annotations

import importlib

from engine.errors import ConfigError


def load_object(
    target: str,
    what: str,
    *,
    form: str = "package.module:name",
    dotted: bool = False,
    error: type[ConfigError] = ConfigError,
) -> object:
    """The object ``target`` names (see the module docstring)."""
    if ":" in target:
        module_name, _, attr = target.partition(":")
    elif dotted:
        module_name, _, attr = target.rpartition(".")
    else:
        module_name, attr = "", ""
    if not module_name or not attr:
        raise error(f"{what} must have the form {form!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise error(f"{what}: cannot import {module_name!r}: {exc!r}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise error(f"{what}: {module_name!r} has no attribute {attr!r}") from exc
    return obj
