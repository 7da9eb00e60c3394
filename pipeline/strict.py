"""The base of every config model (unknown keys are refused and a loaded config cannot change), the
validators that keep YAML's surprises out of it, and the error a config is refused with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def on_off(value: Any) -> Any:
    """YAML reads an unquoted ``on`` or ``off`` as true or false: take them as the words meant."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


class ConfigError(ValueError):
    """A configuration that cannot be used; ``str()`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
