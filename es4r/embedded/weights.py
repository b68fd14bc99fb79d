"""Copying converted tensors into a transformers model, checking every shape (nanoGPT-style)."""

from __future__ import annotations

import torch


def copy_checked(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor], model: str, source: str) -> None:
    """Copy each tensor of `state` into the same-named tensor of `target` (a state_dict),
    failing with the name and both shapes on the first mismatch."""
    with torch.no_grad():
        for name, tensor in state.items():
            if target[name].shape != tensor.shape:
                raise ValueError(f"{name}: {model} expects shape {tuple(target[name].shape)}, {source} gave {tuple(tensor.shape)}")
            target[name].copy_(tensor)
