"""The reply-tuning LoRA (es4r/training/reply_tuning.py) kept beside the LLM's weights, not merged.

Merging would move every tuned weight off the 4-bit blocks the embedded LLM's weights lie on
(es4r/modeling/weight_blocks.py), and the decode steps would read those layers in fp32 again:
~1.5x slower per token on a CPU. Kept beside, a tuned layer is its own weight, untouched, plus
a low-rank term `up(down(x))` (rank 16): the decode graph reads the weight as 4-bit blocks and
adds the same term (es4r/modeling/onnx_decode.py), and PLoRA (es4r/modeling/plora.py) wraps a
tuned layer as it wraps any nn.Linear, adding its speech-position update on top."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


class TunedLinear(nn.Linear):
    """A linear layer plus the reply tuning's low-rank term (its LoRA scaling folded into `reply_up`).
    The buffers avoid the name "lora_", which marks PLoRA's own weights."""

    def __init__(self, base: nn.Linear, down: torch.Tensor, up: torch.Tensor):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.weight, self.bias = base.weight, base.bias
        self.register_buffer("reply_down", down.to(base.weight.dtype).contiguous())  # (r, in)
        self.register_buffer("reply_up", up.to(base.weight.dtype).contiguous())  # (out, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = nn.functional.linear(x, self.reply_down)
        return nn.functional.linear(x, self.weight, self.bias) + nn.functional.linear(low, self.reply_up)


class ReplyAdapterError(ValueError):
    """A folder that is not a reply adapter for this LLM; the message says what is wrong."""


def read_adapter(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (down (r, in), up × scaling (out, r))} from a peft LoRA folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise ReplyAdapterError(f"the reply adapter {folder} is not a LoRA folder (no {ADAPTER_CONFIG} "
                                f"and {ADAPTER_WEIGHTS})")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    scaling = config["lora_alpha"] / config["r"]
    state = load_file(str(folder / ADAPTER_WEIGHTS))
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, down in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")].removeprefix("base_model.model.")
        up = state.get(key.replace(".lora_A.", ".lora_B."))
        if up is None:
            raise ReplyAdapterError(f"the reply adapter {folder} has {key} without its lora_B")
        parts[name] = (down.float(), up.float() * scaling)
    if not parts:
        raise ReplyAdapterError(f"the reply adapter {folder} holds no LoRA weights")
    return parts


def apply_reply_adapter(model: nn.Module, folder: str | Path) -> int:
    """Replace each tuned nn.Linear of `model` by a TunedLinear; returns how many. Refuses an
    adapter whose layers or shapes this model does not have."""
    modules = dict(model.named_modules())
    parts = read_adapter(folder)
    for name, (down, up) in parts.items():
        base = modules.get(name)
        if not isinstance(base, nn.Linear) or down.shape[1] != base.in_features or up.shape[0] != base.out_features:
            raise ReplyAdapterError(f"the reply adapter {Path(folder).name} does not fit this LLM: layer {name}")
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, TunedLinear(base, down, up))
    logger.info("reply adapter %s: %d layers tuned (kept beside their weights)", Path(folder).name, len(parts))
    return len(parts)
