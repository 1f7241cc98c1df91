"""Checkpoint ids on the Hugging Face hub: `hf-hub:<repo>` (transformers or timm repos) and `timm:<name>`.

Files are fetched with `huggingface_hub` into its cache. Without network the error says which files to
fetch and how to pass them instead, because a stack trace from an HTTP client does not.
"""

from __future__ import annotations

import os
from pathlib import Path

from vitkit.errors import MissingPathError, UsageError

HF_PREFIX = "hf-hub:"
TIMM_PREFIX = "timm:"
HUB_URL = "https://huggingface.co"
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class HubUnavailableError(MissingPathError):
    """The hub could not be reached (offline or network error) and the files are not in the local cache."""


def is_hub_id(source: object) -> bool:
    """True for `hf-hub:<repo>` and `timm:<name>` strings."""
    return isinstance(source, str) and source.startswith((HF_PREFIX, TIMM_PREFIX))


def hub_repo(source: str) -> str:
    """The hub repository of an id; timm's weights live at `timm/<name>` (name with its pretrained tag)."""
    if source.startswith(TIMM_PREFIX):
        name = source.removeprefix(TIMM_PREFIX)
        return name if "/" in name else f"timm/{name}"
    return source.removeprefix(HF_PREFIX)


def offline_requested() -> bool:
    """Whether HF_HUB_OFFLINE is set now (read at call time, so it can be set after import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def unreachable_errors() -> tuple[type[Exception], ...]:
    """What a hub request raises when the hub cannot be reached or refuses the file: OSError (no connection,
    offline mode, an HTTP error status, the cache's disk) and the HTTP client's own errors (timeouts, refused
    connections), the base class huggingface_hub's HfHubHTTPError extends. Anything else is a bug."""
    from huggingface_hub import errors

    client = [base for base in errors.HfHubHTTPError.__mro__[1:] if base.__name__ == "HTTPError"]
    return (OSError, *client)


def download(source: str) -> Path:
    """Fetch a hub id's config.json and weights; returns the directory holding them (or the weights file)."""
    repo = hub_repo(source)
    if not repo or repo.count("/") != 1:
        raise UsageError(f"{source!r} is not a hub id; use 'hf-hub:<owner>/<repo>' or 'timm:<model>.<tag>'")
    from huggingface_hub import errors

    try:
        config = fetch(repo, CONFIG_FILE)
    except errors.LocalEntryNotFoundError as error:
        raise HubUnavailableError(unavailable_message(source, repo, error)) from error
    except errors.EntryNotFoundError:
        config = None  # a weights-only repo: the file's content says what it is
    except errors.RepositoryNotFoundError as error:
        raise UsageError(repo_not_found_message(source, repo)) from error
    except errors.RevisionNotFoundError as error:
        raise UsageError(f"{source}: revision not found on the hub ({error})") from error
    except unreachable_errors() as error:
        raise HubUnavailableError(unavailable_message(source, repo, error)) from error
    weights = fetch_weights(source, repo)
    return weights.parent if config is not None else weights


def fetch(repo: str, filename: str) -> Path:
    """One file from the hub cache, downloading it unless HF_HUB_OFFLINE is set."""
    import huggingface_hub

    return Path(huggingface_hub.hf_hub_download(repo, filename, local_files_only=offline_requested()))


def fetch_weights(source: str, repo: str) -> Path:
    """The first of model.safetensors / pytorch_model.bin the repository has."""
    from huggingface_hub import errors

    for filename in WEIGHT_FILES:
        try:
            return fetch(repo, filename)
        except errors.LocalEntryNotFoundError as error:
            raise HubUnavailableError(unavailable_message(source, repo, error)) from error
        except errors.EntryNotFoundError:
            continue
        except errors.RepositoryNotFoundError as error:
            raise UsageError(repo_not_found_message(source, repo)) from error
        except unreachable_errors() as error:
            raise HubUnavailableError(unavailable_message(source, repo, error)) from error
    raise UsageError(f"{source}: {HUB_URL}/{repo} has none of {', '.join(WEIGHT_FILES)}; it is not a ViT checkpoint")


def repo_not_found_message(source: str, repo: str) -> str:
    """Say what a valid id looks like (timm names need their pretrained tag)."""
    hint = (
        " timm ids need the pretrained tag, e.g. 'timm:vit_base_patch16_224.augreg2_in21k_ft_in1k'."
        if source.startswith(TIMM_PREFIX)
        else " Check the spelling, or log in with `hf auth login` for gated or private repositories."
    )
    return f"{source}: repository {HUB_URL}/{repo} was not found or is not accessible.{hint}"


def unavailable_message(source: str, repo: str, error: BaseException) -> str:
    """Which files to fetch by hand and how to pass them, when the hub cannot be reached."""
    return (
        f"cannot download {source} ({type(error).__name__}: {error}); the hub is unreachable or HF_HUB_OFFLINE is "
        f"set, and the files are not in the local cache. On a machine with network, fetch "
        f"{HUB_URL}/{repo}/resolve/main/model.safetensors (for transformers repos also {CONFIG_FILE}, into the same "
        f"directory), copy it here, and pass its path instead of the hub id: "
        f"--pretrained /path/to/model.safetensors (or the directory holding {CONFIG_FILE} and the weights)"
    )
