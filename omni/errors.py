"""The user-facing error type and the translation of the lower packages' errors into it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class InputError(ValueError):
    """Bad input from the user: names the item and the problem (file, format, counts, budgets)."""


def raises_input_error(fn: F) -> F:
    """Decorate a public entry point so encoder / reducer input errors surface as ``InputError``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            if not _from_components(err):
                raise
            raise InputError(str(err)) from err

    return wrapper  # type: ignore[return-value]


def _from_components(err: BaseException) -> bool:
    """Whether ``err`` is an encoder or token-reduction input error (imported here, not at start-up:
    those packages pull in torch)."""
    from encoders.errors import EncoderInputError
    from tokenreduce.errors import ReductionError

    return isinstance(err, (EncoderInputError, ReductionError))
