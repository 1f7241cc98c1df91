"""The objectives' registry: a recipe's `objective.name` -> its class and its settings section, imported when needed.

A name is a key of `OBJECTIVES` (name -> "module:Class", imported only when used, as `vitkit.cli.main.COMMANDS`
does) or a "package.module:Class" path, so a new objective in its own module needs no edit here. The objectives
vitkit ships keep their settings dataclasses in torch-free modules (`SETTINGS`), so reading a recipe and building
`vitkit train --help` import none of their torch code; any other objective's settings are its class's `Settings`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vitkit.errors import UsageError

if TYPE_CHECKING:
    from vitkit.training.objectives import BuildContext, Objective

# Recipe name -> "module:Class", imported when a recipe names it. A recipe may also name any "package.module:Class".
OBJECTIVES: dict[str, str] = {
    "supervised": "vitkit.training.objectives:Supervised",
    "mpp": "vitkit.training.mpp:MaskedPatchPrediction",
    "distill": "vitkit.training.distill:Distillation",
}
# The settings dataclass ("module:Class"; None: no settings) of each objective above, which is its `Settings` and
# whose recipe section is its name (tests/test_objective_registry.py checks both).
SETTINGS: dict[str, str | None] = {
    "supervised": None,
    "mpp": "vitkit.training.mpp_config:MPPSettings",
    "distill": "vitkit.training.distill_config:DistillSettings",
}


def register_objective(name: str, target: str) -> None:
    """Make the objective class at `target` ("package.module:Class") available to recipes as `objective.name: NAME`."""
    if ":" not in target:
        raise UsageError(f"an objective is registered as 'package.module:Class', got {target!r}")
    OBJECTIVES[name] = target
    SETTINGS.pop(name, None)  # its settings are now the class's own


def objective_class(name: str) -> type[Objective]:
    """The Objective subclass a recipe's `objective.name` names (a registered name or "package.module:Class")."""
    from vitkit.training.objectives import Objective

    found = imported(name, OBJECTIVES.get(name, name))
    if not (isinstance(found, type) and issubclass(found, Objective)):
        raise UsageError(f"objective {name!r}: {OBJECTIVES.get(name, name)} is not an Objective subclass")
    return found


def objective_section(name: str) -> tuple[str, type | None]:
    """The recipe section (`objective.<section>`) and settings dataclass (None: none) of objective `name`.

    vitkit's own objectives answer from `SETTINGS` without importing their modules; any other is imported.
    """
    if name in SETTINGS:
        target = SETTINGS[name]
        return name, None if target is None else imported(name, target)
    found = objective_class(name)
    return found.name, found.Settings


def settings_class(name: str) -> type | None:
    """The settings dataclass of objective `name` (None for an objective without settings)."""
    return objective_section(name)[1]


def create_objective(name: str, settings: object | None, context: BuildContext) -> Objective:
    """The objective `name` names, built from its settings (its `Settings()` defaults when None)."""
    cls = objective_class(name)
    if settings is None and cls.Settings is not None:
        settings = cls.Settings()
    return cls.build(settings, context)


def imported(name: str, target: str) -> Any:
    """The attribute a "module:attribute" target names, its module imported now; errors name objective `name`."""
    if ":" not in target:
        raise UsageError(
            f"objective.name must be one of {sorted(OBJECTIVES)} or a 'package.module:Class' path, got {name!r}"
        )
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not (module_name == error.name or module_name.startswith(f"{error.name}.")):
            raise  # the module exists but one of its own imports is missing: a bug, keep the traceback
        raise UsageError(f"objective {name!r}: no module {module_name!r} on the Python path ({target})") from None
    return getattr(module, attribute, None)
