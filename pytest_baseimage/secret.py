"""A secret value that never prints itself; shared by the plugin's registry options and the gate service."""

from __future__ import annotations

from typing import Any


class Secret:
    """A password that does not print itself: repr, str and tracebacks with locals show `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self  # immutable; the plugin deep-copies per-image options
