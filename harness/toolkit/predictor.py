"""Running a transformers module on PyTorch: ``TorchPredictor``, dynamic padding
(``pad_batch``) and parameter counting. torch is imported inside the functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..api import Predictor


def input_names(tokenizer: Any) -> tuple[str, ...]:
    """The model inputs the tokenizer produces (input_ids, attention_mask, token_type_ids?)."""
    names = tuple(getattr(tokenizer, "model_input_names", ()) or ("input_ids", "attention_mask"))
    return tuple(n for n in ("input_ids", "token_type_ids", "attention_mask") if n in names) or (
        "input_ids",
        "attention_mask",
    )


def pad_batch(
    features: Sequence[Mapping[str, Any]], tokenizer: Any, *, with_labels: bool = False
) -> dict[str, Any]:
    """Pad ``input_ids`` (pad id), ``attention_mask``/``token_type_ids`` (0) and, for token
    labels, ``labels`` (-100) to the longest item: dynamic padding. int64 CPU tensors.

    :param features: dicts with ``input_ids`` (+ ``token_type_ids``; + ``labels`` when
        ``with_labels``: a list per token, or an int per sequence).
    """
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(f["input_ids"]) for f in features)
    out: dict[str, Any] = {}
    for name in input_names(tokenizer):
        fill = pad_id if name == "input_ids" else 0
        rows = []
        for f in features:
            ids = f["input_ids"]
            if name == "input_ids":
                row = list(ids)
            elif name == "attention_mask":
                row = [1] * len(ids)
            else:
                row = list(f.get("token_type_ids") or [0] * len(ids))
            rows.append(row + [fill] * (width - len(row)))
        out[name] = torch.tensor(rows, dtype=torch.long)
    if with_labels:
        first = features[0]["labels"]
        if isinstance(first, (list, tuple)):
            out["labels"] = torch.tensor(
                [list(f["labels"]) + [-100] * (width - len(f["labels"])) for f in features],
                dtype=torch.long,
            )
        else:
            out["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
    return out


def count_parameters(module: Any) -> tuple[int, int]:
    """(total, non-zero) over the module's parameters (shared tensors counted once)."""
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
    """Runs a transformers module in eager PyTorch on one device, in one dtype.

    ``save`` writes ``save_pretrained`` output (safetensors + config); ``parameter_counts``
    counts the module's parameters. Subclass it to report another artifact or other counts.
    """

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
