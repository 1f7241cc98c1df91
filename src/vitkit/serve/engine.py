"""The model a server runs: loaded and called through vitkit's own inference code, so a served prediction is the
prediction `vitkit predict` makes on the same file (same decoding, resize and crop, normalisation, precision)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitkit.data.decode import normalize_pixels, prediction_pixels
from vitkit.errors import UsageError
from vitkit.export.metadata import source_sha256
from vitkit.inference import LoadedModel, load_for_inference, with_precision
from vitkit.inference.loading import require_head
from vitkit.inference.predict import classify
from vitkit.models import VisionTransformer


@dataclass
class Engine:
    """A loaded model with what the API reports about it."""

    loaded: LoadedModel
    backend: str  # torch | onnxruntime | aoti
    name: str  # the checkpoint's name, never a full path of the machine
    sha256: str  # of the weights (or the exported file) served

    @classmethod
    def load(
        cls,
        source: str | Path,
        backend: str | None = None,
        device: str = "cpu",
        threads: int = 0,
        precision: str | None = None,
    ) -> Engine:
        """The model `source` names (anything `vitkit predict` takes), on the backend `vitkit predict` would pick,
        in `precision` (None: the checkpoint's, as predict)."""
        from vitkit.export.runtime import backend_for, load_exported

        chosen = backend_for(backend, source)
        if threads:
            torch.set_num_threads(threads)
        if chosen == "torch":
            loaded = with_precision(load_for_inference(source, device), precision)
        elif precision:
            raise UsageError(
                f"--precision is for PyTorch checkpoints; {source} computes in the precision it was exported in"
            )
        else:
            loaded = load_exported(source, threads)
        require_head(loaded.model, loaded.path)
        return cls(loaded, chosen, display_name(source), source_sha256(loaded.path))

    @property
    def img_size(self) -> int:
        """Side of the square input in pixels."""
        return self.loaded.preprocessing.img_size

    @property
    def class_names(self) -> list[str]:
        """The head's labels in output order (indices as text when the checkpoint has none)."""
        names = self.loaded.preprocessing.class_names
        return list(names) if names else [str(i) for i in range(self.loaded.model.config.num_classes)]

    @property
    def explains(self) -> bool:
        """Whether attention rollout can be computed (a ViT run by PyTorch, not an exported graph or a ConvNet)."""
        return self.backend == "torch" and isinstance(self.loaded.model, VisionTransformer)

    def why_no_explanation(self) -> str:
        """Why `explains` is False, for the 422 answer."""
        if self.backend != "torch":
            return (
                f"this server runs an exported graph on {self.backend}, which returns logits only; attention rollout "
                "needs the PyTorch model: serve the checkpoint with --backend torch"
            )
        family = type(self.loaded.model).__name__
        return f"this model ({family}) has no attention to roll out; /v1/explain serves Vision Transformers only"

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing as predict reports it, with the checkpoint named as `name` (not its full path)."""
        described = self.loaded.preprocessing.to_dict()
        described["source"] = described["source"].replace(str(self.loaded.path), self.name)
        return described

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """An RGB image as the (3, S, S) uint8 pixels the model classifies (predict's resize and centre crop)."""
        return prediction_pixels(image, self.img_size)

    def probabilities(self, pixels: list[torch.Tensor]) -> torch.Tensor:
        """Softmax probabilities (B, K) of a list of (3, S, S) uint8 images, run as one batch."""
        prep = self.loaded.preprocessing
        batch = normalize_pixels(torch.stack(pixels), prep.mean, prep.std)
        return classify(self.loaded, batch).softmax(dim=1)

    def top(self, probabilities: torch.Tensor, k: int) -> list[dict[str, Any]]:
        """The k most probable labels of one image's probabilities (K,), as `vitkit predict --json` lists them."""
        names = self.class_names
        values, indices = probabilities.topk(max(1, min(k, len(names))))
        return [
            {"label": names[i], "probability": round(p, 6)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]

    def rollout(self, pixels: torch.Tensor) -> np.ndarray:
        """The (gh, gw) attention-rollout map of one image (paper Fig. 6), through vitkit.analysis."""
        from vitkit.analysis import attention_rollout

        prep = self.loaded.preprocessing
        batch = normalize_pixels(pixels.unsqueeze(0), prep.mean, prep.std).to(self.loaded.device)
        return attention_rollout(self.loaded.model, batch)[0]

    def warm_up(self, max_batch: int) -> None:
        """Run the shapes a server will see once, so the first requests do not pay for lazy initialisation."""
        blank = torch.zeros(3, self.img_size, self.img_size, dtype=torch.uint8)
        for size in sorted({1, max_batch}):
            self.probabilities([blank] * size)

    def card(self) -> dict[str, Any]:
        """What /v1/model and the page show: classes, resolution, preprocessing, where the model came from."""
        model = self.loaded.model
        return {
            "name": self.name,
            "family": type(model).__name__,
            "backend": self.backend,
            "classes": self.class_names,
            "num_classes": len(self.class_names),
            "img_size": self.img_size,
            "preprocessing": self.preprocessing(),
            "sha256": self.sha256,
            "explain": self.explains,
        }


def display_name(source: str | Path) -> str:
    """A checkpoint's name as users know it: a hub id as given, else the last path components (no full path)."""
    text = str(source)
    if ":" in text and not Path(text).exists():
        return text  # a hub id (hf-hub:..., timm:...)
    return Path(text).resolve().name


def overlay_png(pixels: torch.Tensor, rollout: np.ndarray, alpha: float = 0.5) -> bytes:
    """The rollout map as a colour overlay on the classified pixels (the paper's Fig. 6 panel), PNG bytes."""
    from matplotlib import colormaps

    from vitkit.analysis.attention import upsample_maps
    from vitkit.analysis.figures import scale_unit

    side = pixels.shape[-1]
    heat = upsample_maps(torch.from_numpy(np.ascontiguousarray(rollout)), (side, side)).numpy()
    colours = colormaps["jet"](scale_unit(heat))[..., :3]
    image = pixels.permute(1, 2, 0).numpy().astype(np.float32) / 255
    blended = ((1 - alpha) * image + alpha * colours) * 255
    buffer = io.BytesIO()
    Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
