"""Helpers shared by the built-in plugins that run models on PyTorch. Imports torch lazily."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.api import LoadedModel, Predictor


def sha256_files(paths: list[Path], extra: str = "") -> str:
    """Hash of file contents (sorted by name) plus ``extra``; 16 hex digits."""
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def missing_packages_reason(plugin: str, *packages: str) -> str | None:
    """The skip reason of ``plugin`` when any of ``packages`` is not importable here, else None."""
    missing = [n for n in packages if importlib.util.find_spec(n) is None]
    if missing:
        return f"{plugin}: package(s) {', '.join(missing)} not installed (pip install {' '.join(missing)})"
    return None


def hash_text(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def dir_bytes(path: Path) -> int:
    """Bytes on disk of a file or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def count_parameters(module: Any) -> tuple[int, int]:
    """(total, non-zero) over the module's parameters (and packed int8 weights if any)."""
    import torch

    total = nonzero = 0
    seen: set[int] = set()
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()).item())
    return total, nonzero


class TorchPredictor(Predictor):
    """Runs a transformers module in eager PyTorch on one device, in one dtype."""

    runtime = "torch"

    def __init__(self, module: Any, device: str = "cpu", precision: str = "fp32") -> None:
        import torch

        self.device = device
        self.precision = precision
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        module = module.to(device)
        if dtype is not None:
            module = module.to(dtype)
        self.module = module.eval()

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        import torch

        with torch.inference_mode():
            # contiguous: quantised kernels (dynamic int8 embeddings) refuse strided inputs,
            # such as fixed-length batches cut from longer ones (settings.latency_seq_len)
            inputs = {k: v.contiguous().to(self.device, non_blocking=True)
                      for k, v in batch.items()}
            return self.module(**inputs).logits

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def save(self, directory: Path) -> Path:
        """safetensors weights + config, as ``save_pretrained`` writes them."""
        out = directory / "model"
        self.module.save_pretrained(out)
        return out

    def parameter_counts(self) -> tuple[int, int]:
        return count_parameters(self.module)

    def describe(self) -> dict[str, Any]:
        import torch

        return {"threads": torch.get_num_threads()} if self.device == "cpu" else {}


def baseline_predictor(model: LoadedModel, device: str) -> TorchPredictor:
    return TorchPredictor(model.module, device=device, precision="fp32")
