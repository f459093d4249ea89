"""One registry mechanism for every kind of named thing (datasets, models, attacks, objectives, transforms).

A :class:`Registry` maps normalised names to objects; ``register`` is a decorator or a call; ``get`` fails with the
valid names and a "did you mean"; aliases map extra spellings to a name. Entries defined in a higher layer of the
package (the CARSO model lives in ``purification``, above ``models``) are *plugins*: :data:`PLUGINS` names the module
that registers them, imported on first lookup, so no lower layer imports a higher one.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar, overload

from robustlab.core.errors import InputError, UnknownNameError

T = TypeVar("T")

#: (registry kind, name) -> the module whose import registers it. The one place lazy plugins are declared.
PLUGINS: dict[tuple[str, str], str] = {
    ("model", "carso"): "robustlab.purification.carso",
}


def normalize_name(name: str) -> str:
    """The registry key of a name: stripped, lower case, underscores as hyphens (``"FGSM_RS"`` -> ``"fgsm-rs"``)."""
    return str(name).strip().lower().replace("_", "-")


def unknown_name_message(what: str, names: Iterable[str], valid: Iterable[str], *, limit: int = 40) -> str:
    """``unknown model 'resnet-20'. Did you mean 'resnet20'? Valid models: ...``: the unknown names, close matches and
    the valid names (the first ``limit`` of them)."""
    names, valid = list(names), list(valid)
    shown = ", ".join(repr(v) for v in valid[:limit])
    more = f", ... ({len(valid) - limit} more)" if len(valid) > limit else ""
    hints = sorted({m for n in names for m in difflib.get_close_matches(n, valid, n=3)})
    hint = f" Did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    unknown = ", ".join(repr(n) for n in names)
    return f"unknown {what} {unknown}.{hint} Valid {what}s: {shown}{more}"


class Registry(Generic[T]):
    """Names to objects of one ``kind`` (``"attack"``, ``"model"``, ...), with aliases and lazy plugins."""

    def __init__(self, kind: str, *, aliases: dict[str, str] | None = None,
                 check: Callable[[object], bool] | None = None, expects: str = "") -> None:
        """``check`` accepts what may be registered; ``expects`` says what that is in the refusal."""
        self.kind = kind
        self.expects = expects
        self._items: dict[str, T] = {}
        self._aliases = {normalize_name(k): normalize_name(v) for k, v in (aliases or {}).items()}
        self._check = check

    def _plugins(self) -> dict[str, str]:
        return {name: module for (kind, name), module in PLUGINS.items() if kind == self.kind}

    def key(self, name: str) -> str:
        """The canonical key of ``name`` (aliases resolved), whether or not it is registered."""
        key = normalize_name(name)
        return self._aliases.get(key, key)

    @overload
    def register(self, name: str, obj: None = None, *, overwrite: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, overwrite: bool = False) -> T: ...

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False) -> T | Callable[[T], T]:
        """Register ``obj`` under ``name``; without ``obj``, a decorator. Re-registering another object under a
        taken name is an error unless ``overwrite``."""

        def add(item: T) -> T:
            if self._check is not None and not self._check(item):
                expected = self.expects or "another kind of object"
                raise InputError(f"cannot register {item!r} as {self.kind} {name!r}: expected {expected}")
            key = self.key(name)
            if key in self._items and self._items[key] is not item and not overwrite:
                raise InputError(f"{self.kind} {key!r} is already registered; pass overwrite=True to replace it")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin or a test's temporary entry); unknown names are an error."""
        key = self.key(name)
        if key not in self._items:
            raise UnknownNameError(unknown_name_message(self.kind, [name], self.names()))
        del self._items[key]

    def get(self, name: str) -> T:
        """The object registered under ``name`` (importing its plugin module on first use)."""
        key = self.key(name)
        if key not in self._items and key in self._plugins():
            importlib.import_module(self._plugins()[key])
        if key not in self._items:
            raise UnknownNameError(unknown_name_message(self.kind, [name], self.names()))
        return self._items[key]

    def names(self) -> list[str]:
        """Every registered name (plugins not yet imported included), sorted."""
        return sorted(set(self._items) | set(self._plugins()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.key(name) in set(self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        """(name, object) of every registered entry, importing the plugins first."""
        for name in self._plugins():
            self.get(name)
        return sorted(self._items.items())
