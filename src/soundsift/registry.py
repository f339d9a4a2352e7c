"""Name -> factory tables (timm's ``register_model`` idea) for encoders, dataset readers, search backends.

A target is a callable or a ``"module:attr"`` string imported on first use, so registering the built-in
entries costs nothing and ``import soundsift`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from soundsift.errors import UnknownNameError


class Registry:
    """Named factories of one kind (``"audio encoder"``, ``"dataset format"``...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._table: dict[str, Callable[..., Any] | str] = {}

    def register(self, name: str, target: Callable[..., Any] | str | None = None):
        """Register ``target`` under ``name``; without a target, a decorator."""

        def add(obj):
            if name in self._table and self._table[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._table[name] = obj
            return obj

        return add if target is None else add(target)

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name``; UnknownNameError lists the known names."""
        if name not in self._table:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}")
        target = self._table[name]
        if isinstance(target, str):
            module, attr = target.split(":")
            target = self._table[name] = getattr(importlib.import_module(module), attr)
        return target

    def names(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self):
        return iter(self.names())
