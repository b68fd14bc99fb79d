"""Stage 2 (paper Sec. 3.2): PLoRA — LoRA applied only at the speech positions of a sequence.

Built on peft's custom-layer registration: every targeted nn.Linear becomes a
`PLoRALinear`, a peft LoRA layer whose low-rank update is multiplied by a per-position
mask. The mask is passed in with the `speech_positions(mask)` context manager (no setters
on the model); outside that context, and at every text position, the layer is the base
layer, bit for bit."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from es4r.config import PLoRAConfig

_SPEECH_MASK: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("es4r_speech_mask", default=None)


@contextmanager
def speech_positions(mask: torch.Tensor | None) -> Iterator[None]:
    """Within this block, PLoRA layers add their update where `mask` (B, L) is True.

    Positions beyond the mask (tokens generated with a KV cache) are text: base weights."""
    token = _SPEECH_MASK.set(mask)
    try:
        yield
    finally:
        _SPEECH_MASK.reset(token)


def _lora_linear_class() -> type:
    from peft.tuners.lora import Linear as LoraLinear

    class PLoRALinear(LoraLinear):
        """peft LoRA Linear whose update is gated by the speech-position mask."""

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = self.base_layer(x, *args, **kwargs)
            mask = _SPEECH_MASK.get()
            if self.disable_adapters or mask is None or tuple(mask.shape) != tuple(x.shape[:-1]):
                return result
            gate = mask.unsqueeze(-1).to(result.dtype)  # (B, L, 1)
            for adapter in self.active_adapters:
                if adapter not in self.lora_A:
                    continue
                lora_A, lora_B = self.lora_A[adapter], self.lora_B[adapter]
                update = lora_B(lora_A(self.lora_dropout[adapter](x.to(lora_A.weight.dtype))))
                result = result + (update * self.scaling[adapter]).to(result.dtype) * gate
            return result

        def merge(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("PLoRA cannot be merged: its update applies only at speech positions")

    return PLoRALinear


def apply_plora(llm: nn.Module, config: PLoRAConfig) -> nn.Module:
    """Wrap `llm` with PLoRA on config.target_modules; the base model is frozen by peft.
    Returns the peft model (its forward/generate take the same arguments)."""
    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=list(config.target_modules), bias="none",
    )
    lora_config._register_custom_module({nn.Linear: _lora_linear_class()})
    return get_peft_model(llm, lora_config)


def plora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the PLoRA weights (for ES4R checkpoints)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}


def load_plora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load PLoRA weights strictly: every LoRA tensor must be present with the right shape."""
    from peft import set_peft_model_state_dict

    expected = plora_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"PLoRA weights do not match this LLM: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"PLoRA tensor {name}: expected shape {tuple(expected[name].shape)}, found {tuple(tensor.shape)}")
    set_peft_model_state_dict(model, state)
