"""``null`` on the command line at any depth of nested classes.

jsonargparse (4.53) hands a setting two or more classes deep to the inner class's parser
as the text ``--key=<value>``, formatted from the value it has already read, so ``null``
arrives there as the string ``'None'``:
``--judge.init_args.client.init_args.api_key_env=null`` set the name of the variable to
"None". One level deep, and in YAML files at any depth, ``null`` is read correctly.

The workaround: such an argument is rewritten, before jsonargparse reads it, as a
mapping given to the first class level, e.g. ``--judge.init_args.client=
{"init_args": {"api_key_env": null}}``; jsonargparse reads mappings as objects at every
level (no text round trip) and merges them into the settings given before, so nothing
else of the nested class changes. Only values that contain a null are rewritten.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["NullSafeArgs", "class_options", "nest_nested_nulls"]

_NOT_A_SETTING = ("class_path", "dict_kwargs", "help")


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


def _load(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _nested_key(key: str, class_options: Iterable[str]) -> tuple[str, str, list[str]] | None:
    """(class option, first-level setting, deeper path) of a key two or more levels
    inside a class-typed option, else None."""
    option = max((o for o in class_options if key.startswith(o + ".")), key=len, default=None)
    if option is None:
        return None
    parts = key[len(option) + 1:].split(".")
    if parts[0] == "init_args":
        parts = parts[1:]
    if len(parts) < 2 or parts[0] in _NOT_A_SETTING:
        return None
    return option, parts[0], parts[1:]


def nest_nested_nulls(args: Sequence[str], class_options: Iterable[str]) -> list[str]:
    """Rewrite every ``--a.init_args.b.init_args.c=<value with a null>`` (long or short
    form, ``=`` or a separate value) whose ``--a`` is in ``class_options`` as
    ``--a.init_args.b=<JSON mapping>``; every other argument is returned unchanged."""
    class_options = tuple(class_options)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            out.append(arg)
            continue
        if "=" in arg:
            key, text = arg.split("=", 1)
        elif i < len(args) and not args[i].startswith("-"):
            key, text = arg, args[i]
        else:
            out.append(arg)
            continue
        nested = _nested_key(key, class_options)
        value = _load(text) if nested is not None else None
        if nested is None or not _has_null(value):
            out.append(arg)
            continue
        if "=" not in arg:
            i += 1  # the separate value is consumed into the rewritten argument
        option, first, path = nested
        for name in reversed(path):
            value = {name: value}
        out.append(f"{option}.init_args.{first}={json.dumps(value)}")
    return out


def class_options(actions: Mapping[str, Any]) -> list[str]:
    """The option strings of a parser whose values are classes (``class_path`` + ``init_args``)."""
    # jsonargparse exports no public name for its type-hint action; a version that
    # moves it fails here loudly rather than silently skipping the rewrite.
    from jsonargparse._typehints import ActionTypeHint

    return [o for o, a in actions.items()
            if isinstance(a, ActionTypeHint) and ActionTypeHint.is_subclass_typehint(a, all_subtypes=False)]


class NullSafeArgs:
    """Parser mixin (before jsonargparse's ``ArgumentParser``) that applies
    :func:`nest_nested_nulls` to the arguments of each parse, subcommand parsers included."""

    def parse_args(self, args: Sequence[str] | None = None, *posargs, **kwargs):
        import sys

        args = list(sys.argv[1:] if args is None else args)
        args = nest_nested_nulls(args, class_options(self._option_string_actions))
        return super().parse_args(args, *posargs, **kwargs)
