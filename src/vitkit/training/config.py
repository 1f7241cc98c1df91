"""The training configuration: one dataclass per concern, read from YAML recipes and overridden by flags.

`TrainConfig()` is the embedded default recipe (`recipes/digits.yaml`): a narrow ViT on scikit-learn's
digits that trains in well under three minutes on a 2-core CPU. Every run writes its fully resolved
config to `RUN_DIR/config.yaml`, which is itself a recipe. Values are checked and converted by the one
mechanism of `vitkit.configs` (recipes, `config.yaml` and flags alike).

The objective section names the objective and holds the settings section of each objective it was given
(`objective: {name: distill, distill: {teacher: RUN, kind: hard}}`); each objective declares its settings
dataclass (`Objective.Settings`; vitkit's own in torch-free modules beside their code, `mpp_config.py` and
`distill_config.py`, found through `vitkit.training.objective_registry`). Keys of the old flat layout
(`objective.mpp_target`, `objective.teacher`, `objective.distill: hard`, ...) are translated, with a warning, by
each settings class's `old_keys`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vitkit import configs
from vitkit.configs import Knob, Section, Words, coerce, knob
from vitkit.data import AugmentConfig, DataConfig
from vitkit.errors import MissingPathError, UsageError
from vitkit.inference.modes import TRAINING_PRECISIONS as PRECISIONS
from vitkit.inference.modes import TTA_MODES
from vitkit.training.objective_registry import OBJECTIVES, create_objective, objective_section, settings_class

if TYPE_CHECKING:
    from torch import nn

    from vitkit.training.objectives import Objective

log = logging.getLogger("vitkit.training")

OPTIMIZERS = ("adamw", "sgd", "muon", "ranger")
SCHEDULES = ("cosine", "linear", "constant", "flat_cos")
ATTENTION_KERNELS = ("auto", "math", "flash", "eager")
DISTRIBUTED = ("auto", "none", "ddp", "fsdp")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


# Model config fields a training run sets itself (from the data section) or that only record provenance.
FIXED_MODEL_FIELDS = ("img_size", "num_classes", "name", "extra")
OWN_MODEL_KEYS = ("name", "pretrained", "new_head")  # the model section's own keys, beside the overrides


@dataclass
class ModelConfig(Section):
    """Which model to train: a model name, an optional checkpoint to start from, and overrides.

    `overrides` are fields of the config of the family the name belongs to (`ViTConfig` for "Ti/4",
    `CifarResNetConfig` for "resnet20"), checked against it, so a new model field or family needs no change here.
    In a recipe they sit beside `name` (`model: {name: Ti/4, pool: gap}`, `model: {name: resnet20, shortcut: B}`).
    Setting `name` (in a recipe or with --model) drops the overrides that are not given alongside it.
    """

    name: str = knob(
        "Mini/4",
        "model: a ViT variant ('Ti/4', 'S/16', 'B/16', ...), a preset, or a ConvNet ('resnet20', 'resnetv2_50x1', "
        "'vgg8'; its own fields in the recipe's model section)",
        flag="--model",
    )
    pretrained: str | None = knob(None, "initialise from this checkpoint (any format `vitkit.load` reads)")
    new_head: bool = knob(
        False, "fine-tuning: drop --pretrained's head and pre-logits layer, start from a zero head (paper Sec. 3.2)"
    )
    overrides: dict[str, Any] = knob(
        help="fields of the model family's config to change (ViTConfig: hidden_dim, depth, pool, posemb, ...)",
        factory=lambda: {
            "hidden_dim": 96,
            "depth": 4,
            "num_heads": 3,
            "mlp_dim": 192,
            "pool": "gap",
            "posemb": "sincos_2d",
        },
    )

    def __post_init__(self) -> None:
        self.overrides = check_model_overrides(self.name, self.pretrained, self.overrides)

    def to_dict(self) -> dict[str, Any]:
        """The recipe form: name, pretrained, new_head, then the overrides beside them."""
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "new_head": self.new_head,
            **configs.plain(self.overrides),
        }

    def updated(self, values: dict[str, Any], path: str, origin: str = "config") -> ModelConfig:
        """A copy with a recipe's flat model section (name, pretrained, new_head, override fields) applied.

        A model name fixes the whole architecture: only the overrides given alongside it apply. Fields set earlier
        (by a base recipe or the recipe a flag overrides) that the new name drops are named in a warning, since
        the run would otherwise silently train another model; replacing the embedded default stays quiet.
        """
        values = dict(values)
        overrides = {} if "name" in values else dict(self.overrides)
        if "name" in values:
            warn_dropped_fields(self, values, origin)
        own = {key: values.pop(key) for key in OWN_MODEL_KEYS if key in values}
        overrides.update(values.pop("overrides", None) or {})
        overrides.update(values)
        try:
            head = configs.update(ModelConfig(self.name, self.pretrained, self.new_head, {}), own, path, origin)
            return ModelConfig(head.name, head.pretrained, head.new_head, overrides)
        except UsageError as error:
            raise UsageError(f"{origin}: {error}") from None


def warn_dropped_fields(current: ModelConfig, values: dict[str, Any], origin: str) -> None:
    """Warn when the model name in `values` drops model fields that a recipe set and `values` does not restate."""
    if current == ModelConfig():
        return  # the embedded default's fields are not the user's choice: replacing them is the point of a name
    given = set(values) | set(values.get("overrides") or {})
    dropped = {key: value for key, value in current.overrides.items() if key not in given}
    if dropped:
        log.warning(
            "%s: model %r resets the model fields to its own defaults, so the ones set before it are dropped: %s. "
            "To keep them, state them beside the name: in the recipe's model section, or as flags (`vitkit train "
            "--help` lists the model's)",
            origin, values["name"], ", ".join(f"{key}={value}" for key, value in dropped.items()),
        )  # fmt: skip


def model_fields(name: str, pretrained: str | None) -> tuple[str, dict[str, Any]]:
    """The family of model `name` and the type hints of the fields a recipe may override.

    With `pretrained` the checkpoint decides the family and `name` may only label the run: a name vitkit does
    not know then allows the fields of every family (`create_model` checks them against the checkpoint's).
    """
    from vitkit.models.registry import ARCHITECTURES, config_class

    try:
        families = [config_class(name)]
    except UsageError:
        if pretrained is None:
            raise
        families = [config_type for config_type, _ in ARCHITECTURES.values()]
    hints: dict[str, Any] = {}
    for family in reversed(families):
        hints.update({key: hint for key, hint in configs.hints_of(family).items() if key not in FIXED_MODEL_FIELDS})
    return " or ".join(configs.label_of(family) for family in families), hints


def check_model_overrides(name: str, pretrained: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides coerced to the field types of model `name`'s family; an unknown name is an error naming the family
    and its valid fields."""
    if not isinstance(overrides, dict):
        raise UsageError(f"model overrides must be a mapping of field names to values, got {overrides!r}")
    if not overrides:
        return {}
    family, known = model_fields(name, pretrained)
    out = {}
    for key, value in overrides.items():
        if key not in known:
            raise UsageError(
                f"unknown model field {key!r} for {name} (a {family}); valid fields: {', '.join(OWN_MODEL_KEYS)}, "
                f"{', '.join(known)}"
            )
        out[key] = value if value is None else coerce(value, known[key], f"model.{key}")
    return out


def model_knobs() -> list[Knob]:
    """The model fields a recipe may override, as flags: the ViT's (most runs train one; a ConvNet's own fields
    are set in the recipe's model section), each defaulting to the variant's value."""
    from vitkit.models.config import ViTConfig

    variants = Words("the variant's")
    fields = [k for k in configs.knobs(ViTConfig(), "model") if k.key.split(".", 1)[1] not in FIXED_MODEL_FIELDS]
    return [dataclasses.replace(k, default=variants) for k in fields]


@dataclass
class OptimConfig(Section):
    """Optimizer, learning-rate schedule (linear warm-up, then per-step decay), clipping and weight EMA."""

    optimizer: str = knob(
        "adamw",
        "adamw (no decay on biases, norms, position embeddings, tokens) | sgd | muon (Muon for the blocks' matrices, "
        "AdamW for the rest, at AdamW's lr) | ranger (RAdam + Lookahead, the Imagenette leaderboard's; eps 1e-6)",
    )
    lr: float = knob(2e-3, "peak learning rate, reached at the end of warm-up")
    weight_decay: float = knob(0.05, "weight decay (not on biases, norms, position embeddings, tokens)")
    momentum: float = knob(0.9, "SGD momentum")
    nesterov: bool = knob(False, "Nesterov momentum (SGD)")
    muon_convs: bool = knob(
        False,
        "muon: also the convolution kernels not reading the image (a hybrid's or tokenizer's stem), each as an "
        "out x (in kh kw) matrix",
    )
    betas: tuple[float, float] = knob((0.9, 0.999), "AdamW and Ranger betas (2 values)")
    schedule: str = knob(
        "cosine", "decay after warm-up: cosine | linear | constant | flat_cos (flat for --flat-fraction, then cosine)"
    )
    flat_fraction: float = knob(0.75, "flat_cos: the share of the steps after warm-up held at the peak rate")
    warmup_epochs: float = knob(2.0, "linear warm-up length in epochs")
    warmup_steps: int | None = knob(None, "linear warm-up length in steps (overrides --warmup-epochs)")
    min_lr: float = knob(1e-5, "learning rate at the end of the decay")
    clip_grad: float = knob(1.0, "clip the global gradient norm to this (0 disables)")
    ema_decay: float = knob(0.0, "exponential moving average of the weights, e.g. 0.999 (0 disables)")
    layer_decay: float = knob(
        1.0, "layer-wise lr decay: block l of L trains at lr * decay^(L+1-l), embeddings at decay^(L+1) (1 disables)"
    )
    linear_probe: bool = knob(False, "train only the head (and the objective's parts): a linear probe of a frozen body")
    freeze_patch_embed: bool = knob(False, "keep the patch embedding (and a hybrid's CNN stem) fixed")

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"optim.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.flat_fraction < 1:
            raise UsageError(
                f"optim.flat_fraction must be in [0, 1) (fastai's flat_cos: 0.75), got {self.flat_fraction}"
            )
        if self.lr <= 0:
            raise UsageError(f"optim.lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise UsageError(f"optim.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.weight_decay < 0 or self.clip_grad < 0 or self.warmup_epochs < 0:
            raise UsageError(
                "optim.weight_decay, optim.clip_grad and optim.warmup_epochs must be >= 0, got "
                f"{self.weight_decay}, {self.clip_grad}, {self.warmup_epochs}"
            )
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise UsageError(f"optim.warmup_steps must be >= 0 (or null to use warmup_epochs), got {self.warmup_steps}")
        if not 0 <= self.momentum < 1 or not all(0 <= b < 1 for b in self.betas):
            raise UsageError(f"optim.momentum and optim.betas must be in [0, 1), got {self.momentum}, {self.betas}")
        if not 0 <= self.ema_decay < 1:
            raise UsageError(
                f"optim.ema_decay must be in [0, 1) (0 disables EMA; 0.999 is typical), got {self.ema_decay}"
            )
        if not 0 < self.layer_decay <= 1:
            raise UsageError(
                f"optim.layer_decay must be in (0, 1] (1 disables; 0.75 is typical), got {self.layer_decay}"
            )


@dataclass
class RunConfig(Section):
    """How long to train and how to record it: epochs, batch, seed, evaluation, checkpoints, logging."""

    epochs: int = knob(40, "epochs")
    steps: int | None = knob(
        None, "total optimizer steps (overrides --epochs: trains the fewest epochs covering them, stops at exactly S)"
    )
    batch_size: int = knob(64, "images per optimizer step, over all processes (split into grad_accum micro-batches)")
    grad_accum: int = knob(1, "micro-batches per optimizer step, to fit a batch in memory (same result)")
    seed: int = knob(0, "seed of weights, augmentation, dropout and batch order")
    eval_batch_size: int | None = knob(None, "validation batch size (default: --batch-size)")
    save_every: int = knob(0, "also checkpoint every N optimizer steps (0: only at the end of each epoch)")
    log_every: int = knob(50, "optimizer steps between plain log lines (when stdout is not a terminal)")
    time_budget_min: float = knob(
        0.0, "> 0: fit the run into this many minutes (re-planned in steps after every epoch, at most --epochs)"
    )
    # Progressive resizing: the first `low_res_epochs` epochs train at `low_res_size` px (a quarter of the
    # tokens at half the size, ~5x cheaper per image), the rest and every evaluation at data.img_size.
    # Use learned position embeddings (resampled to the smaller grid) so positions mean the same at both sizes.
    low_res_size: int | None = knob(None, "progressive resizing: train the first --low-res-epochs epochs at this size")
    low_res_epochs: int = knob(0, "epochs at --low-res-size before switching to --img-size")
    low_res_share: float = knob(0.0, "with --time-budget-min: the share of the budget trained at --low-res-size")
    eval_tta: str = knob(
        "none",
        "test-time augmentation at validation, logits averaged: none | flip (each image and its mirror) | "
        "multicrop (airbench: those two and their 1-pixel shifts)",
    )

    def updated(self, values: dict[str, Any], path: str, origin: str = "config") -> RunConfig:
        """`Section.updated`, translating the old `eval_flip` and saying where a key moved to the runtime section."""
        if "eval_flip" in values:  # the old boolean of runs before multi-crop TTA
            values = dict(values)
            flip = values.pop("eval_flip")
            values.setdefault("eval_tta", "flip" if flip else "none")
        for name in values:
            if name in RUNTIME_KEYS:
                raise UsageError(
                    f"{origin}: unknown key {path}.{name} (it moved to the runtime section); valid keys of {path!r}: "
                    f"{', '.join(configs.field_names(self))}"
                )
        return configs.update(self, values, path, origin)

    def __post_init__(self) -> None:
        if self.eval_tta not in TTA_MODES:
            raise UsageError(f"run.eval_tta must be one of {TTA_MODES}, got {self.eval_tta!r}")
        for name in ("epochs", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise UsageError(
                f"run.batch_size {self.batch_size} is not divisible by run.grad_accum {self.grad_accum}; "
                "the batch is split into grad_accum equal micro-batches"
            )
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"run.steps must be >= 1 (or null to train run.epochs), got {self.steps}")
        if self.steps is not None and self.time_budget_min > 0:
            raise UsageError(
                "run.steps cannot be combined with run.time_budget_min (the budget plans whole epochs); give one"
            )
        if self.save_every < 0 or self.time_budget_min < 0:
            raise UsageError(
                f"run.save_every and run.time_budget_min must be >= 0, got {self.save_every}, {self.time_budget_min}"
            )
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise UsageError(f"run.eval_batch_size must be >= 1 or null, got {self.eval_batch_size}")
        if self.low_res_epochs < 0 or (self.low_res_epochs > 0 and not self.low_res_size):
            raise UsageError(
                f"run.low_res_epochs must be >= 0 and needs run.low_res_size, got {self.low_res_epochs}, "
                f"{self.low_res_size}"
            )
        if self.low_res_epochs > 0 and self.time_budget_min > 0:
            raise UsageError(
                "run.time_budget_min plans the low-resolution phase as a share of the budget, not in epochs: "
                "replace run.low_res_epochs with run.low_res_share (e.g. 0.6)"
            )
        if not 0 <= self.low_res_share < 1:
            raise UsageError(f"run.low_res_share must be in [0, 1), got {self.low_res_share}")
        if self.low_res_share > 0 and (self.time_budget_min <= 0 or not self.low_res_size):
            raise UsageError(
                "run.low_res_share is a share of run.time_budget_min trained at run.low_res_size: set both "
                f"(got time_budget_min {self.time_budget_min:g}, low_res_size {self.low_res_size})"
            )


@dataclass
class RuntimeConfig(Section):
    """Where and how the run computes. Defaults use the machine: measured precision, every core this process has."""

    device: str = knob("auto", "auto (cuda when available) | cpu | cuda | cuda:N")
    precision: str = knob(
        "auto", "auto (bf16 where a timed probe finds it clearly faster, else fp32) | bf16 | fp16 (CUDA) | fp32"
    )
    threads: int | None = knob(None, "torch CPU threads (default: the cores this process may use)")
    attention: str = knob(
        "auto",
        "attention kernel: auto (CPU: the fastest of math/flash/eager, timed at the model's shapes) | math | flash "
        "(torch's SDPA kernels) | eager (explicit matmuls and softmax)",
    )
    compile: bool = knob(False, "torch.compile the model (measure first)")
    distributed: str = knob("auto", "auto (DDP under torchrun) | ddp | fsdp (shard parameters, for large models)")
    activation_checkpointing: bool = knob(False, "recompute each block in the backward pass (less memory, ~30% slower)")

    def __post_init__(self) -> None:
        if not _DEVICE_PATTERN.match(self.device):
            raise UsageError(f"runtime.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"runtime.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.attention not in ATTENTION_KERNELS:
            raise UsageError(f"runtime.attention must be one of {ATTENTION_KERNELS}, got {self.attention!r}")
        if self.distributed not in DISTRIBUTED:
            raise UsageError(f"runtime.distributed must be one of {DISTRIBUTED}, got {self.distributed!r}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"runtime.threads must be >= 1 or null, got {self.threads}")


RUNTIME_KEYS = [f.name for f in dataclasses.fields(RuntimeConfig)]


class ObjectiveSettings:
    """Base of an objective's settings dataclass (`Objective.Settings`, recipe section `objective.<name>`).

    Cross-checks between its own fields go in the subclass's `__post_init__`; the hooks below let a section
    select its objective (a teacher means distillation), refuse another objective, and complete the recipe.
    """

    # Old flat keys of the objective section -> this section's field ("mpp_target" -> "target"), for old recipes.
    old_keys: ClassVar[dict[str, str]] = {}

    def selects(self) -> bool:
        """Whether these settings, as given, ask for their objective when the recipe names none (default: no)."""
        return False

    def check_objective(self, name: str) -> None:
        """Refuse settings that make no sense under objective `name` (default: any objective is fine)."""

    def complete(self, config: TrainConfig) -> TrainConfig:
        """The recipe with what this objective needs filled in (default: unchanged); run after every update."""
        return config


@dataclass
class ObjectiveConfig(Section):
    """What a training step optimises (see `vitkit.training.objectives`), and the settings of each objective given.

    `sections` maps an objective's name to its settings (`Objective.Settings`); the named objective's section
    is always there. A teacher selects distillation.
    """

    name: str = knob(
        "supervised",
        "training objective: supervised (cross-entropy against the labels) | mpp (masked patch prediction, Sec. 4.6) "
        "| distill (DeiT distillation; set by --teacher) | package.module:Class (an Objective of your own)",
        flag="--objective",
    )
    sections: dict[str, ObjectiveSettings] = field(default_factory=dict)

    @property
    def settings(self) -> Any:  # the named objective's own dataclass (MPPSettings, DistillSettings, ...)
        """The settings of the named objective (None for an objective without settings)."""
        return self.sections.get(objective_section(self.name)[0])

    def to_dict(self) -> dict[str, Any]:
        """The recipe form: the name, then each objective's section."""
        return {"name": self.name, **{key: configs.plain(value) for key, value in self.sections.items()}}

    def updated(self, values: dict[str, Any], path: str = "objective", origin: str = "config") -> ObjectiveConfig:
        """A copy with the name and section values of a recipe's objective section (dotted keys or mappings)."""
        values = translate_old_keys(configs.nest(values), origin)
        name = coerce(values.pop("name", self.name), str, "objective.name")
        chosen = objective_section(name)
        sections = dict(self.sections)
        for key, value in values.items():
            settings_type = section_class(key, chosen, origin)
            if not isinstance(value, dict):
                raise UsageError(f"{origin}: objective.{key} must be a mapping of keys to values, got {value!r}")
            current = sections.get(key) or settings_type()
            sections[key] = configs.update(current, value, f"objective.{key}", origin)
        if name == "supervised":  # a section that asks for its objective (a teacher) selects it
            name = next((key for key, settings in sections.items() if settings.selects()), name)
            chosen = objective_section(name)
        section, settings_type = chosen
        if settings_type is not None and section not in sections:
            sections[section] = settings_type()
        for settings in sections.values():
            settings.check_objective(name)
        return ObjectiveConfig(name, sections)


def section_class(key: str, chosen: tuple[str, type | None], origin: str) -> type:
    """The settings dataclass of section `objective.<key>`: the chosen objective's (`objective_section`), or a
    registered one's."""
    section, settings_type = chosen
    if key == section and settings_type is not None:
        return settings_type
    if key in OBJECTIVES and settings_class(key) is not None:
        return settings_class(key)
    valid = ["name", *sorted({*(k for k in OBJECTIVES if settings_class(k)), section} - {"supervised"})]
    raise UsageError(f"{origin}: unknown key objective.{key}; valid keys of 'objective': {', '.join(valid)}")


def translate_old_keys(values: dict[str, Any], origin: str) -> dict[str, Any]:
    """The objective section with keys of the old flat layout (`mpp_target`, `teacher`, `distill: hard`) moved into
    their objective's section (`mpp: {target}`, `distill: {teacher, kind}`).

    Old run directories wrote every objective's keys; a moved section that only repeats its defaults and is not
    the named objective's is dropped, so a resumed supervised run does not grow `mpp` and `distill` sections.
    """
    out: dict[str, Any] = {}
    moved: dict[str, dict[str, Any]] = {}
    renames = []
    for key, value in values.items():
        target = None if key == "name" or isinstance(value, dict) else old_key(key)
        if target is not None:
            moved.setdefault(target[0], {})[target[1]] = value
            renames.append(f"objective.{key} -> objective.{target[0]}.{target[1]}")
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    if renames:
        log.warning("%s: old objective keys translated (%s)", origin, ", ".join(renames))
    for section, section_values in moved.items():
        defaults = configs.plain(settings_class(section)())
        if section == values.get("name") or any(defaults.get(k) != configs.plain(v) for k, v in section_values.items()):
            out[section] = {**section_values, **(out.get(section) or {})}
    return out


def old_key(key: str) -> tuple[str, str] | None:
    """(section, field) of an old flat key of the objective section, None when no registered objective had it."""
    for name in OBJECTIVES:
        settings_type = settings_class(name)
        if settings_type is not None and key in settings_type.old_keys:
            return name, settings_type.old_keys[key]
    return None


def _digits_augment() -> AugmentConfig:
    """Light augmentation for 8x8 digits upsampled to 32: small shifts, no flips (a flipped 2 is not a 2), no mixing."""
    return AugmentConfig(
        crop="pad", pad=2, hflip=False, randaugment_n=0, mixup=0.0, cutmix=0.0, random_erasing=0.0, label_smoothing=0.1
    )


@dataclass
class TrainConfig:
    """Everything a training run depends on; the defaults are the embedded digits recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(img_size=16))  # 8x8 digits, 2x upsampled
    augment: AugmentConfig = field(default_factory=_digits_augment)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        """A YAML-ready nested dict (tuples become lists)."""
        return {section: getattr(self, section).to_dict() for section in section_names()}

    def to_yaml(self) -> str:
        """The config as a recipe file."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, values: dict[str, Any], origin: str = "config", *, complete: bool = True) -> TrainConfig:
        """A copy with dotted keys ("optim.lr") or nested sections set, each value checked against its field's type.

        `complete` lets the named objective fill in what it needs (`ObjectiveSettings.complete`: a fresh student's
        distillation token); `load_config` defers it until the flags are applied, as they may name a checkpoint.
        """
        nested: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if "." in key:
                section, name = key.split(".", 1)
                nested.setdefault(section, {})[name] = value
            elif isinstance(value, dict):
                nested.setdefault(key, {}).update(value)
            elif key in section_names():
                raise UsageError(f"{origin}: section {key!r} must be a mapping of keys to values, got {value!r}")
            else:
                raise UsageError(f"{origin}: unknown section {key!r}; valid sections: {', '.join(section_names())}")
        changed: dict[str, Any] = {}
        for section, updates in nested.items():
            if section not in section_names():
                raise UsageError(f"{origin}: unknown section {section!r}; valid sections: {', '.join(section_names())}")
            changed[section] = getattr(self, section).updated(updates, section, origin)
        config = dataclasses.replace(self, **changed)
        settings = config.objective.settings
        return config if settings is None or not complete else settings.complete(config)

    @classmethod
    def from_dict(cls, values: dict[str, Any], origin: str = "config", *, complete: bool = True) -> TrainConfig:
        """Build from a nested dict such as a parsed recipe; missing keys keep their defaults."""
        if not isinstance(values, dict):
            raise UsageError(
                f"{origin}: a recipe is a mapping of sections (model, data, ...), got {type(values).__name__}"
            )
        return cls().replace(values, origin, complete=complete)


def build_objective(config: TrainConfig, model: nn.Module, num_classes: int) -> Objective:
    """The objective a training config names, built from its settings section for `model` and the run's data."""
    from vitkit.training.objectives import BuildContext  # torch: imported when a run starts, not when a recipe is read

    context = BuildContext(model, num_classes, tuple(config.data.mean), tuple(config.data.std), config.run.eval_tta)
    return create_objective(config.objective.name, config.objective.settings, context)


def section_names() -> list[str]:
    """The sections of a recipe, in file order."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The default recipe, updated by the YAML recipe at `path` (after the recipes it names as `base:`), then by
    dotted-key `overrides` (flags)."""
    config = TrainConfig()
    if path is not None:
        for origin, values in recipe_chain(Path(path)):
            config = config.replace(values, origin=origin, complete=False)
        settings = config.objective.settings
        if settings is not None and not overrides:
            config = settings.complete(config)
    if overrides:
        config = config.replace(overrides, origin="command line")
    return config


def recipe_chain(path: Path, children: tuple[Path, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The recipe at `path` and the recipes it inherits from, root first, each as (file name, values less `base`).

    A recipe may name `base: OTHER.yaml` (relative to itself) and give only what differs: each section is applied
    over its base's as flags are over a recipe (a model `name` drops the base's model fields, as --model does).
    """
    values = read_recipe(path)
    base = values.pop("base", None)
    if base is None:
        return [(str(path), values)]
    if not isinstance(base, str):
        raise UsageError(f"recipe {path}: base must be the path of another recipe (relative to this one), got {base!r}")
    base_path = path.parent / base
    chain = (*children, path)
    if base_path.resolve() in {p.resolve() for p in chain}:
        cycle = " -> ".join(str(p) for p in (*chain, base_path))
        raise UsageError(f"recipe {path}: its bases form a cycle ({cycle}); a recipe cannot inherit from itself")
    if not base_path.is_file():
        raise MissingPathError(f"recipe {path} names base {base!r}, but {base_path} does not exist")
    return [*recipe_chain(base_path, chain), (str(path), values)]


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Parse one YAML recipe file into a dict (its `base:` unresolved; see `recipe_chain`), with errors naming it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"recipe {path} does not exist; see recipes/ for examples")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UsageError(f"recipe {path} is not valid YAML: {error}") from error
    if values is not None and not isinstance(values, dict):
        raise UsageError(f"{path}: a recipe is a mapping of sections (model, data, ...), got {type(values).__name__}")
    return values or {}
