"""Frozen dataclasses that are pytrees: arrays are leaves, fields marked `static` are metadata."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast, dataclass_transform

import jax

T = TypeVar("T")


def static(**kwargs: Any) -> Any:
    """A dataclass field that is part of the pytree's static metadata (hashable, not traced)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


@dataclass_transform(
    frozen_default=True, kw_only_default=True, field_specifiers=(dataclasses.field, static)
)
def pytree_dataclass(cls: type[T]) -> type[T]:
    """Make `cls` a frozen, keyword-only dataclass registered as a JAX pytree.

    A ``__repr__`` written by hand on the class or a base class is kept (arrays make the
    generated one unreadable).
    """
    custom_repr = any("__repr__" in vars(base) for base in cls.__mro__[:-1])
    cls = dataclasses.dataclass(frozen=True, kw_only=True, repr=not custom_repr)(cls)
    return jax.tree_util.register_dataclass(cls)


def replace(obj: T, **changes: Any) -> T:
    """A copy of the dataclass `obj` with `changes` applied."""
    return dataclasses.replace(cast(Any, obj), **changes)  # T is any pytree dataclass
