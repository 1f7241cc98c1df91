"""`knob`: a dataclass field whose help text lives with it (read by the command line and by docs)."""

from __future__ import annotations

import dataclasses
from typing import Any


def knob(default: Any = dataclasses.MISSING, help: str = "", factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its help text in `metadata["help"]`; `factory` for mutable defaults."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(cls: type, name: str) -> str:
    """The help text of field `name` of dataclass `cls` ("" when it has none)."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            return item.metadata.get("help", "")
    return ""
