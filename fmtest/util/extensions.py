"""Classes from outside fmtest: entry points of installed packages and "module:Class" paths.

The pipeline and dataset registries use these to load a user's plugin; anything wrong with one
(it does not import, is not the right kind of class, lacks a method) is one line naming it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import entry_points

from fmtest.errors import ConfigError


@cache
def installed(group: str) -> dict[str, str]:
    """Entry points of `group`: name -> "module:Class". Read once per process."""
    return {ep.name: ep.value for ep in entry_points(group=group)}


def load_class(spec: str, base: type, what: str) -> type:
    """Import "module:Class" and check it is a concrete subclass of `base`; `what` names it in errors."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what}: {spec!r} is not \"module:Class\"")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - whatever goes wrong while importing user code is that plugin's problem
        raise ConfigError(f"{what}: cannot import {module_name}: {type(e).__name__}: {e}") from None
    cls = module
    for part in attribute.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise ConfigError(f"{what}: module {module_name} has no {attribute}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{what}: {spec} is not a subclass of {base.__module__}.{base.__qualname__}")
    if inspect.isabstract(cls):
        raise ConfigError(f"{what}: {spec} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    return cls


@cache
def named(cls: type, name: str) -> type:
    """`cls`, or a subclass of it whose `name` is `name`: what messages and the prediction cache key on."""
    if getattr(cls, "name", None) == name:
        return cls
    return type(cls.__name__, (cls,), {"name": name, "__module__": cls.__module__,
                                        "__qualname__": f"{cls.__qualname__}[{name}]"})


def unknown_name(kind: str, name: str, known: list[str]) -> str:
    """"unknown pipeline 'padm' (did you mean padim?); known: ..." for a name a user mistyped."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}"


def registered_names(builtins: Mapping[str, str], group: str, kind: str) -> list[str]:
    """Built-in names in menu order, then installed ones (entry-point `group`), which may not reuse a
    built-in name."""
    plugins = installed(group)
    clash = sorted(set(plugins) & set(builtins))
    if clash:
        raise ConfigError(f"installed {kind}(s) {', '.join(clash)} (entry-point group {group}) reuse built-in names; "
                          "rename them")
    return [*builtins, *sorted(plugins)]


def registered_class(name: str, builtins: Mapping[str, str], group: str, kind: str,
                     load: Callable[[str, str, str], type]) -> type:
    """The class a built-in or installed name stands for, loaded and checked by `load(spec, name, what)`."""
    if name in builtins:
        return load(builtins[name], name, f"{kind} {name}")
    plugins = installed(group)
    if name in plugins:
        return load(plugins[name], name, f"{kind} {name} (entry point {plugins[name]})")
    raise ConfigError(unknown_name(kind, name, [*builtins, *sorted(plugins)]))
