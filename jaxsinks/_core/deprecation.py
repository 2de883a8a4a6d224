"""Old names kept working for one release: each use warns with a `DeprecationWarning` that names
the new name.

Two kinds: `renamed_property` for an attribute of a sink, `deprecated_arguments` for a
`create` argument that was renamed or that used to be accepted positionally. The wrapped
`create` keeps its new signature (`inspect.signature` follows ``__wrapped__``), so the docs and
the defaults table show only the new names.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

#: When the old names go: the release after the one that renamed them.
REMOVAL = "will be removed in the next release"


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that `old` is deprecated in favour of `new` (both as the user writes them)."""
    warnings.warn(
        f"{old} is deprecated and {REMOVAL}; use {new} instead.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_property(new: str, *, old: str, meaning: str) -> property:
    """A read-only attribute `old` that warns and returns the attribute `new`."""

    def get(self: Any) -> Any:
        kind = type(self).__name__
        warn_deprecated(f"`{kind}.{old}`", f"`{kind}.{new}` ({meaning})")
        return getattr(self, new)

    return property(get, doc=f"Deprecated alias of `{new}` ({meaning}); warns.")


def deprecated_arguments(
    owner: str,
    *,
    renamed: Mapping[str, str] | None = None,
    positional: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Accept old spellings of `owner`'s arguments for one release, with a warning each.

    The wrapper lists the old keywords it still takes as ``deprecated_names``.

    Args:
        owner: the call as users write it, e.g. ``"CsvSink.create"``.
        renamed: old keyword -> new keyword.
        positional: keyword-only arguments that used to be accepted positionally, in their old
            order after the function's positional parameters (e.g. ``("capacity",)``).
    """
    renames = dict(renamed or {})

    def wrap(func: F) -> F:
        n_positional = func.__code__.co_argcount  # parameters that may be given by position

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            extra = args[n_positional:]
            if extra and len(extra) <= len(positional):
                for name, value in zip(positional, extra):
                    if name in kwargs:
                        raise ConfigError(f"`{owner}` got `{name}` twice (by position and name).")
                    warn_deprecated(
                        f"Passing `{name}` to `{owner}` by position",
                        f"`{name}=` (it is keyword-only)",
                    )
                    kwargs[name] = value
                args = args[:n_positional]
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ConfigError(
                            f"`{owner}` got both `{new}` and its deprecated name `{old}`; pass "
                            f"only `{new}`."
                        )
                    warn_deprecated(f"`{owner}({old}=...)`", f"`{new}=`")
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        wrapper.deprecated_names = frozenset(renames)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]  # same call signature, plus the old names

    return wrap
