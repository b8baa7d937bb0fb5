"""How a plugin registers its components: ``@hookimpl`` marks its hooks, each of which receives a :class:`Registry`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

from benchsuite.api.params import Params

PROJECT = "benchsuite"
hookimpl = pluggy.HookimplMarker(PROJECT)


class Registry(Protocol):
    """What a registration hook receives: one registry per plugin kind."""

    def add(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        params: type[Params] = Params,
        description: str = "",
    ) -> None:
        """Register ``factory`` under ``name``.

        ``params`` is the pydantic model that validates the component's ``params:`` mapping
        in a suite; the factory receives an instance of it as its first argument.
        ``description`` is one line shown by ``benchsuite plugins``.
        """
