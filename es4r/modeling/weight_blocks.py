"""Weights that already lie on 4-bit blocks, stored as those blocks: the same numbers, ~1/5 of the bytes.

The embedded LLM is the GGUF's Q4_1 model dequantised (es4r/embedded/llm_gguf.py): in every
linear layer each run of 32 weights along a row is `low + step * q` with q in 0..15. A decode
step reads every weight once and is bound by memory bandwidth (experiments/decode_floor.py), so
reading those 4-bit codes instead of fp32 copies makes it faster without changing one weight.
This is not quantisation: `four_bit_blocks` returns blocks only when they give back every
weight exactly, and None otherwise (the layer then stays fp32).

ONNX Runtime's MatMulNBits (no zero points, its fast kernel) reads a code as `(q - 8) * step`.
What that leaves out of a weight, `low + 8 * step`, is one number per block, the same for its
32 inputs, so it enters the product as `offset · (sum of the block's inputs)`: a matrix 32 times
smaller than the layer's, applied to the input's block sums (`OnnxDecoder`'s graph does both)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 32  # weights per block along a row (the input dimension), as in GGUF's Q4_0/Q4_1
LEVELS = 15  # 4-bit codes: 0..15
MIDDLE = 8  # what MatMulNBits subtracts from a code when it is given no zero points


@dataclass
class FourBitBlocks:
    """A (rows, columns) weight as MatMulNBits reads it, plus the per-block offsets it leaves out."""

    packed: np.ndarray  # (rows, columns / 32, 16) uint8: two codes per byte, the even column in the low nibble
    steps: np.ndarray  # (rows * columns / 32,) float32: each block's step, row by row
    offsets: np.ndarray  # (columns / 32, rows) float32: low + 8 * step, laid out for block sums @ offsets

    @property
    def shape(self) -> tuple[int, int]:
        return self.packed.shape[0], self.packed.shape[1] * BLOCK

    def weight(self) -> np.ndarray:
        """The weight these blocks stand for, computed the way MatMulNBits and the offsets do."""
        rows, columns = self.shape
        codes = np.empty((rows, columns // BLOCK, BLOCK), np.float32)
        codes[..., 0::2], codes[..., 1::2] = self.packed & 0x0F, self.packed >> 4
        steps = self.steps.reshape(rows, -1, 1)
        return ((codes - MIDDLE) * steps + self.offsets.T[..., None]).reshape(rows, columns)


@torch.no_grad()
def four_bit_blocks(weight: torch.Tensor) -> FourBitBlocks | None:
    """`weight` (rows, columns) as 4-bit blocks of 32 along each row, or None unless each of
    its blocks is exactly `low + step * q` (q in 0..15) for every weight — checked bit for bit
    in fp32, after the step is read off the block's extremes in fp64."""
    rows, columns = weight.shape
    if weight.dtype != torch.float32 or columns % BLOCK:
        return None
    blocks = weight.reshape(rows, columns // BLOCK, BLOCK).double()
    low, high = blocks.aminmax(dim=-1, keepdim=True)
    step = (high - low) / LEVELS
    codes = torch.where(step > 0, torch.round((blocks - low) / torch.where(step > 0, step, 1.0)), 0.0)
    if not torch.equal((low + step * codes).float().reshape(rows, columns), weight):
        return None
    codes = codes.to(torch.uint8).numpy()
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    offsets = (low + MIDDLE * step)[..., 0].float().numpy()
    return FourBitBlocks(np.ascontiguousarray(packed), step.float().numpy().reshape(-1),
                         np.ascontiguousarray(offsets.T))


def on_blocks(weight: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A weight of the same shape that lies on 4-bit blocks (each block's 32 weights rounded
    to 16 levels between its extremes, as GGUF's Q4_1 does): for tests of the exact route."""
    rows, columns = weight.shape
    blocks = weight.detach().reshape(rows, columns // BLOCK, BLOCK).double()
    low, high = blocks.aminmax(dim=-1, keepdim=True)
    step = ((high - low) / LEVELS).half().double()  # Q4_1 stores the step and the low in fp16
    low = low.half().double()
    codes = torch.clamp(torch.round((blocks - low) / step), 0, LEVELS)
    return (step.float() * codes.float() + low.float()).reshape(rows, columns)  # as gguf dequantises, in fp32
