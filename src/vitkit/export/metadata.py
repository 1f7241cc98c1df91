"""What travels with an exported file: preprocessing, class names, outputs and provenance.

Stored twice, with the same content: in the file (an ONNX model's metadata_props; a .pt2 package's AOTInductor
metadata, `get_metadata()` of the loaded package), string -> string with each value JSON, under the keys below;
and in a config.json beside the file, so any runtime can read it.

    vitkit.img_size        int      side of the square input the graph takes (a --dynamic-size graph: its default)
    vitkit.mean, .std      [C floats]  per-channel normalisation of pixels in [0, 1] (C: the input channels)
    vitkit.crop_fraction   float    images are resized so their shorter side is round(img_size / crop_fraction),
                                    then centre-cropped to img_size (vitkit's load_images / EvalTransform)
    vitkit.input           "float" (normalised NCHW float32) | "uint8" (NCHW uint8 RGB; normalised in the graph)
    vitkit.class_names     [str] | null
    vitkit.outputs         [str]    graph outputs in order; the first is the logits used for prediction
    vitkit.dynamic_size    bool
    vitkit.precision       "fp32" | "int8-dynamic" | "int8-static"
    vitkit.architecture, vitkit.model   the source model's architecture and config
    vitkit.source, vitkit.source_sha256, vitkit.version   where the weights came from and who exported them
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitkit.errors import MissingPathError, UsageError
from vitkit.export.aoti import load_package
from vitkit.files import write_text_atomic

log = logging.getLogger(__name__)

PREFIX = "vitkit."
REQUIRED = ("img_size", "mean", "std", "input")  # what inference cannot run without
CONFIG_NAME = "config.json"
INPUTS = ("float", "uint8")


@dataclass
class ExportMetadata:
    """The preprocessing and provenance of an exported model (see the module docstring for each key)."""

    img_size: int
    mean: list[float]
    std: list[float]
    input: str = "float"
    crop_fraction: float = 0.875
    class_names: list[str] | None = None
    outputs: list[str] = field(default_factory=lambda: ["logits"])
    dynamic_size: bool = False
    precision: str = "fp32"
    architecture: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    source_sha256: str = ""
    version: str = ""

    def to_props(self) -> dict[str, str]:
        """As ONNX metadata_props: "vitkit.<key>" -> JSON text."""
        return {PREFIX + key: json.dumps(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> ExportMetadata:
        """From plain keys (config.json, or metadata_props without the prefix), checked."""
        missing = [key for key in REQUIRED if values.get(key) is None]
        if missing:
            raise UsageError(
                f"{where} has no vitkit metadata for {', '.join(PREFIX + key for key in missing)}: export it with "
                f"`vitkit export CKPT --out FILE` (.onnx or .pt2), or write a {CONFIG_NAME} beside it holding "
                '{"img_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input": "float"} '
                "(the model's own values)"
            )
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        meta = cls(**known)
        meta.check(where)
        return meta

    def check(self, where: str) -> None:
        """Refuse values inference would misread."""
        if not isinstance(self.img_size, int) or isinstance(self.img_size, bool) or self.img_size <= 0:
            raise UsageError(f"{where}: vitkit.img_size must be a positive integer, got {self.img_size!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) for v in value):
                raise UsageError(f"{where}: vitkit.{name} must be numbers (one per image channel), got {value!r}")
        if len(self.mean) != len(self.std):
            raise UsageError(f"{where}: vitkit.mean and vitkit.std differ in length: {self.mean!r}, {self.std!r}")
        if min(self.std) <= 0:
            raise UsageError(f"{where}: vitkit.std must be positive, got {self.std!r}")
        if self.input not in INPUTS:
            raise UsageError(f"{where}: vitkit.input must be one of {', '.join(INPUTS)}, got {self.input!r}")


def read_metadata(path: str | Path) -> ExportMetadata:
    """The vitkit metadata of an exported file (.onnx: its metadata_props; .pt2: the package's), else the
    config.json beside it."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"exported file {path} not found; create one with `vitkit export CKPT --out {path}`")
    if path.suffix.lower() == ".pt2":
        return metadata_from_props(load_package(path).get_metadata(), path)
    from vitkit.export.deps import require

    model = require("onnx").load(str(path), load_external_data=False)
    return metadata_from_props({p.key: p.value for p in model.metadata_props}, path)


def metadata_from_props(props: dict[str, str], path: Path) -> ExportMetadata:
    """ExportMetadata from a file's "vitkit.<key>" -> JSON entries, else from the config.json beside it."""
    values = {key.removeprefix(PREFIX): value for key, value in props.items() if key.startswith(PREFIX)}
    if values:
        try:
            return ExportMetadata.from_dict({key: json.loads(value) for key, value in values.items()}, str(path))
        except json.JSONDecodeError as error:
            raise UsageError(
                f"{path}: a vitkit.* metadata value is not JSON ({error}); export the file again"
            ) from error
    beside = path.parent / CONFIG_NAME
    if beside.is_file():
        try:
            loaded = json.loads(beside.read_text())
        except json.JSONDecodeError as error:
            raise UsageError(f"{beside} is not valid JSON ({error})") from error
        return ExportMetadata.from_dict(loaded if isinstance(loaded, dict) else {}, f"{path} (and {beside})")
    return ExportMetadata.from_dict({}, str(path))


def write_metadata(onnx_path: str | Path, meta: ExportMetadata) -> None:
    """Put `meta` into an .onnx file's metadata_props (replacing vitkit's keys) and write config.json beside it.

    A .pt2 package gets the same keys when it is compiled (`vitkit.export.pt2`) and the same config.json."""
    from vitkit.export.deps import require

    onnx = require("onnx")
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    kept = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, **meta.to_props()})
    onnx.save(model, str(onnx_path))
    write_config(onnx_path, meta)


def write_config(path: Path, meta: ExportMetadata) -> None:
    """The config.json beside an exported file: the metadata as plain JSON, for any runtime to read.

    It replaces only an earlier export's config.json: any other one (a checkpoint's, when the file is exported
    into a checkpoint directory) is kept, with a warning; the file holds its metadata anyway.
    """
    beside = path.parent / CONFIG_NAME
    if beside.exists() and not is_export_config(beside):
        log.warning(
            "kept %s: it is not an exported model's config (a checkpoint's?); %s holds its preprocessing itself. "
            "Export into a folder of its own to get a config.json beside the file as well",
            beside, path.name,
        )  # fmt: skip
        return
    write_text_atomic(beside, json.dumps(asdict(meta), indent=2) + "\n")


def is_export_config(path: Path) -> bool:
    """Whether a config.json holds an exported model's metadata (only ExportMetadata's keys), not something else."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(loaded, dict) and "img_size" in loaded and set(loaded) <= set(ExportMetadata.__dataclass_fields__)


def source_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint: the file, or a directory's files in name order (weights and config)."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
