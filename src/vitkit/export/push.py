"""Push a run or checkpoint to the Hugging Face hub, with a model card written from the run.

`push(source, repo_id, to=...)` stages a folder (vitkit's checkpoint, or the transformers directory of
`vitkit convert --to hf`), writes README.md (the model card: data, recipe, results from summary.json, the curves,
the command that reproduces it, how to load it) and uploads it with `huggingface_hub.HfApi` (`create_repo`,
`upload_folder`). Without a token, offline or unreachable, it stops with a UsageError that says what to do,
the hub's own error kept as its cause.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitkit.errors import UsageError

TARGETS = ("vitkit", "hf")
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
RUN_FILES = ("config.yaml", "summary.json", "curves.png", "metrics.csv")  # uploaded beside the weights when present


class HubPushError(UsageError):
    """The upload did not happen: no token, offline, unreachable, or refused by the hub."""


@dataclass
class Pushed:
    """What `push` did: the repository's URL and the files uploaded."""

    url: str
    files: list[str]


def push(
    source: str | Path, repo_id: str, *, to: str = "vitkit", private: bool = False, token: str | None = None
) -> Pushed:
    """Upload `source` (run directory, checkpoint, hub id) to the hub repository `repo_id` ("owner/name")."""
    if not REPO_ID.match(repo_id):
        raise UsageError(f"{repo_id!r} is not a hub repository; give OWNER/NAME, e.g. alice/vit-cifar10")
    if to not in TARGETS:
        raise UsageError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    token = require_token(token)
    with tempfile.TemporaryDirectory(prefix="vitkit-push-") as scratch:
        folder = Path(scratch) / "repo"
        stage(source, folder, repo_id, to)
        files = sorted(p.name for p in folder.iterdir())
        url = upload(folder, repo_id, private=private, token=token)
    return Pushed(url, files)


def require_token(token: str | None) -> str:
    """The token to push with: --token, else huggingface_hub's (HF_TOKEN or `hf auth login`); offline: refused."""
    from vitkit.checkpoints.hub import offline_requested

    if offline_requested():
        raise HubPushError(
            "HF_HUB_OFFLINE is set, and pushing needs the network: unset HF_HUB_OFFLINE (or push from a machine "
            "that reaches huggingface.co)"
        )
    import huggingface_hub

    token = token or huggingface_hub.get_token()
    if not token:
        raise HubPushError(
            "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass --token (a token with write "
            "access, from https://huggingface.co/settings/tokens)"
        )
    return token


def upload(folder: Path, repo_id: str, *, private: bool, token: str) -> str:
    """Create the repository if needed and upload `folder` in one commit; returns the repository's URL."""
    import huggingface_hub
    from huggingface_hub import errors

    api = huggingface_hub.HfApi(token=token)
    transport = getattr(errors, "HTTPError", OSError)  # httpx2's base error (huggingface_hub >= 1); before, OSError
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload from vitkit push")
    except errors.HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise HubPushError(
                f"the hub refused the token (401): log in again with `hf auth login` or pass a valid --token ({error})"
            ) from error
        if status == 403:
            raise HubPushError(
                f"the token may not write to {repo_id} (403): use a token with write access to "
                f"{repo_id.split('/')[0]}, or push to your own namespace ({error})"
            ) from error
        raise HubPushError(f"the hub refused the upload to {repo_id}: {error}") from error
    except (transport, OSError) as error:  # connection errors; OfflineModeIsEnabled is an OSError
        raise HubPushError(
            f"could not reach the hub to push {repo_id} ({type(error).__name__}: {error}); check the network (and "
            "HF_ENDPOINT, HTTPS_PROXY) and run the command again"
        ) from error
    return str(url)


def stage(source: str | Path, folder: Path, repo_id: str, to: str) -> None:
    """Write the files to upload into `folder`: the weights in the target's format, the run's files, README.md."""
    from vitkit.checkpoints import load
    from vitkit.inference import read_preprocessing, resolve_checkpoint

    checkpoint = resolve_checkpoint(source)
    model = load(checkpoint)
    prep = read_preprocessing(checkpoint, model)
    if to == "hf":
        from vitkit.checkpoints.to_hf import write_hf

        write_hf(model, folder, mean=prep.mean, std=prep.std, class_names=model.class_names)
    else:
        from vitkit.checkpoints import save
        from vitkit.checkpoints.native import is_native_checkpoint

        if is_native_checkpoint(checkpoint):
            shutil.copytree(checkpoint, folder, ignore=shutil.ignore_patterns("*.pt"))  # not the training state
        else:
            metadata = {"data": {"img_size": prep.img_size, "mean": list(prep.mean), "std": list(prep.std)}}
            save(model, folder, class_names=model.class_names, metadata=metadata)
    run_dir = run_directory(source, checkpoint)
    run = {}
    if run_dir is not None:
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, folder / name)
        run = read_run(run_dir)
    card = model_card(repo_id, to, model, prep, run, has_curves=(folder / "curves.png").is_file())
    (folder / "README.md").write_text(card)


def run_directory(source: str | Path, checkpoint: Path) -> Path | None:
    """The run a checkpoint belongs to (a run directory, or RUN/checkpoints/NAME), else None."""
    for candidate in (Path(str(source)), checkpoint.parent.parent):
        if (candidate / "checkpoints").is_dir() and (candidate / "config.yaml").is_file():
            return candidate
    return None


def read_run(run_dir: Path) -> dict[str, Any]:
    """summary.json and config.yaml of a run (each {} / "" when absent or unreadable)."""
    summary: dict[str, Any] = {}
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except json.JSONDecodeError:
            summary = {}
    recipe = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    return {"summary": summary if isinstance(summary, dict) else {}, "recipe": recipe, "name": run_dir.name}


def model_card(repo_id: str, to: str, model, prep, run: dict[str, Any], *, has_curves: bool) -> str:
    """README.md for the hub: front matter, what the model is, data, results, curves, recipe, how to load it."""
    config, summary, recipe = model.config, run.get("summary", {}), run.get("recipe", "")
    names = model.class_names or []
    library = "transformers" if to == "hf" else "vitkit"
    lines = [
        "---",
        f"library_name: {library}",
        "pipeline_tag: image-classification",
        "tags:",
        *[f"- {tag}" for tag in ("vitkit", "vision-transformer", "image-classification")],
        "---",
        "",
        f"# {repo_id.split('/')[1]}",
        "",
        f"{describe(config)}, trained with vitkit. This repository holds "
        + ("a transformers directory (`ViTForImageClassification` / DeiT)." if to == "hf" else "a vitkit checkpoint."),
        "",
        "## Data",
        "",
    ]
    data = recipe_value(recipe, "data", "path")
    lines.append(f"- training data: `{data}`" if data else "- training data: not recorded with this checkpoint")
    if summary.get("train_images"):
        lines.append(f"- {summary['train_images']} training and {summary.get('val_images', '?')} validation images")
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    lines.append(f"- {config.num_classes} classes" + (f": {shown}" if names else ""))
    lines.append(
        f"- inputs: {prep.img_size}x{prep.img_size} px (shorter side resized to {round(prep.img_size / 0.875)}, "
        f"bicubic, centre crop), mean {list(prep.mean)}, std {list(prep.std)}"
    )
    lines += ["", "## Results", ""]
    lines += results_table(summary) or ["No summary.json was found with this checkpoint: no results recorded."]
    if has_curves:
        lines += ["", "![training curves](curves.png)"]
    if recipe:
        lines += [
            "",
            "## Recipe",
            "",
            "The resolved recipe of the run (`config.yaml`):",
            "",
            "```yaml",
            recipe.rstrip(),
        ]
        lines += ["```", "", "Reproduce it (with vitkit installed):", "", "```bash"]
        lines += [f"vitkit train --config config.yaml --out runs/{run.get('name', 'run')}", "```"]
    lines += ["", "## Use it", "", "```bash", f"vitkit predict hf-hub:{repo_id} image.jpg", "```", "", "```python"]
    lines += ["import vitkit", "", f'model = vitkit.create_model(pretrained="hf-hub:{repo_id}")']
    if to == "hf":
        lines += ["", "from transformers import AutoImageProcessor, AutoModelForImageClassification", ""]
        lines += [f'model = AutoModelForImageClassification.from_pretrained("{repo_id}")']
        lines += [f'processor = AutoImageProcessor.from_pretrained("{repo_id}")  # resizes; vitkit also centre-crops']
    lines += ["```", ""]
    return "\n".join(lines)


def describe(config) -> str:
    """'A ViT (192-wide x 12 layers, 3 heads, 4x4 patches) at 32x32 px' or a ConvNet's name."""
    from vitkit.models import ViTConfig

    size = f"{config.img_size[0]}x{config.img_size[1]} px"
    if isinstance(config, ViTConfig):
        kind = "A DeiT (distilled ViT)" if config.distilled else "A Vision Transformer"
        shape = f"{config.hidden_dim}-wide x {config.depth} layers, {config.num_heads} heads"
        patches = f"{config.stem} stem" if config.stem else f"{config.patch_size[0]}x{config.patch_size[1]} patches"
        return f"{kind} ({config.name + ', ' if config.name else ''}{shape}, {patches}) at {size}"
    return f"A ConvNet ({config.name}) at {size}"


def results_table(summary: dict[str, Any]) -> list[str]:
    """The run's results as a markdown table (empty without a summary)."""
    rows = []
    for key, label in (("val_top1", "best val top-1 (%)"), ("val_top5", "best val top-5 (%)")):
        if isinstance(summary.get(key), (int, float)):
            rows.append((label, f"{summary[key]:.2f}"))
    if "best_epoch" in summary:
        rows.append(("best epoch / epochs", f"{summary['best_epoch']} / {summary.get('epochs', '?')}"))
    for key, label in (("wall_s", "training time (s)"), ("train_images_per_s", "train images/s")):
        if isinstance(summary.get(key), (int, float)):
            rows.append((label, f"{summary[key]:.0f}"))
    for key, label in (("precision", "precision"), ("device", "device"), ("threads", "threads")):
        if summary.get(key) is not None:
            rows.append((label, str(summary[key])))
    if not rows:
        return []
    return ["| | |", "|---|---:|", *[f"| {label} | {value} |" for label, value in rows]]


def recipe_value(recipe: str, section: str, key: str) -> str | None:
    """One value of the run's config.yaml (read as YAML), or None."""
    if not recipe:
        return None
    import yaml

    try:
        document = yaml.safe_load(recipe)
    except yaml.YAMLError:
        return None
    value = (document or {}).get(section, {}) if isinstance(document, dict) else {}
    return str(value.get(key)) if isinstance(value, dict) and value.get(key) is not None else None
