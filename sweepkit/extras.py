"""Optional dependencies: imported on first use, with the install command when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``; if it is missing, say which sweepkit extra provides it.

    >>> sklearn = require("sklearn", "recipes")
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the module exists but one of its own imports failed
        raise ModuleNotFoundError(
            f"{module} is not installed; it comes with sweepkit's {extra!r} extra: pip install \"sweepkit[{extra}]\"",
            name=exc.name,
        ) from None
