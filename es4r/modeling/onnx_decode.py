"""The LLM's greedy decode steps in ONNX Runtime, on a CPU.

Measured on 2 cores (scripts/decode_runtimes.py): one decode step of the embedded SmolLM2 runs
at ~40 tokens/s in ONNX Runtime against ~30 in eager torch, with the same greedy replies (8 of
8; the logits agree to ~2e-5). The step is written out as a plain module (`DecodeStep`:
rotary, grouped-query attention, SwiGLU over the LLM's own weights), exported once, and run
with the key/value cache passed in and out.

Only decode steps run here. The prompt is read by torch (`ES4RModel.generate`), so PLoRA still
acts at the speech positions; every generated token is a text position, where PLoRA is the
base layer, so the exported base LLM is the same function there. The greedy loop applies the
same logits processors, stopping criteria and streamer calls as transformers' `generate`
(repetition penalty, n-gram ban, the caller's processors, in that order); sampling keeps
`generate`."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

STEP_FILE = "decode_step.onnx"
EXPORTER_VERSION = 1  # bump when DecodeStep or the export changes: old exports are rebuilt
MAX_LENGTH = 8192  # the exported step's longest cache


SUPPORTED = ("llama", "qwen2", "qwen3")  # the layouts DecodeStep writes out


def unsupported(config) -> str | None:
    """Why DecodeStep cannot stand for an LLM of this config, or None when it can."""
    if config.model_type not in SUPPORTED:
        return f"model type {config.model_type!r} (written out: {', '.join(SUPPORTED)})"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rope scaling {rope.get('rope_type')!r}"
    if getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    return None


class DecodeStep(nn.Module):
    """One decode step of a Llama-layout causal LM: (token id, position, past keys, past
    values) -> (logits, keys, values), the caches shaped (layers, 1, kv heads, length, head
    dim). Written out so it exports as one plain graph."""

    def __init__(self, llm: nn.Module):
        super().__init__()
        config = llm.config
        self.llm = llm
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.width = config.hidden_size
        self.head_dim = getattr(config, "head_dim", None) or self.width // self.heads
        theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim),
                             persistent=False)

    def forward(self, ids, position, past_keys, past_values):
        d = self.head_dim
        hidden = self.llm.model.embed_tokens(ids)
        angles = position.float()[:, None] * self.inv_freq[None]
        angles = torch.cat([angles, angles], -1)
        cos, sin = angles.cos()[None, None], angles.sin()[None, None]

        def rotate(x):
            return x * cos + torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1) * sin

        keys, values = [], []
        for index, layer in enumerate(self.llm.model.layers):
            attention, normed = layer.self_attn, layer.input_layernorm(hidden)
            q = attention.q_proj(normed).view(1, 1, self.heads, d)
            k = attention.k_proj(normed).view(1, 1, self.kv_heads, d)
            if hasattr(attention, "q_norm"):  # Qwen3 normalises each head's query and key
                q, k = attention.q_norm(q), attention.k_norm(k)
            q, k = rotate(q.transpose(1, 2)), rotate(k.transpose(1, 2))
            v = attention.v_proj(normed).view(1, 1, self.kv_heads, d).transpose(1, 2)
            k, v = torch.cat([past_keys[index], k], 2), torch.cat([past_values[index], v], 2)
            keys.append(k)
            values.append(v)
            group = self.heads // self.kv_heads
            weights = torch.softmax(q @ k.repeat_interleave(group, 1).transpose(-1, -2) / d ** 0.5, -1)
            mixed = (weights @ v.repeat_interleave(group, 1)).transpose(1, 2).reshape(1, 1, self.heads * d)
            hidden = hidden + attention.o_proj(mixed)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.llm.lm_head(self.llm.model.norm(hidden)), torch.stack(keys), torch.stack(values)


def export_decode_step(llm: nn.Module, path: Path) -> Path:
    """Export `llm`'s decode step (base weights; call outside any PLoRA context) to `path`."""
    config = llm.config
    heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache = torch.zeros(config.num_hidden_layers, 1, heads, 3, head_dim)
    length = torch.export.Dim("length", max=MAX_LENGTH)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(DecodeStep(llm).eval(), (torch.tensor([[0]]), torch.tensor([3]), cache, cache.clone()),
                          str(path), dynamo=True, input_names=["ids", "position", "past_keys", "past_values"],
                          output_names=["logits", "keys", "values"], verbose=False,
                          dynamic_shapes={"ids": None, "position": None, "past_keys": {3: length},
                                          "past_values": {3: length}})
    logger.info("exported the LLM's decode step to ONNX in %.1f s", time.perf_counter() - started)
    return path


class OnnxDecoder:
    """Greedy decode steps of one exported LLM in an ONNX Runtime session."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    @classmethod
    def for_llm(cls, llm: nn.Module, llm_folder: Path) -> "OnnxDecoder":
        """The decoder of `llm` (loaded from `llm_folder`), exported beside that folder the
        first time and again whenever the folder's weights or the exporter change."""
        from importlib.metadata import version

        from es4r.embedded.setup import MANIFEST, build_once

        llm_folder = Path(llm_folder)
        made_from = llm_folder / MANIFEST
        wanted = {"kind": "llm decode step (ONNX)", "exporter_version": EXPORTER_VERSION, "torch": torch.__version__,
                  "onnxscript": version("onnxscript"),
                  "llm": made_from.read_text() if made_from.exists() else f"{llm_folder.resolve()}"}
        folder = llm_folder.parent / f"{llm_folder.name}-decode-onnx"
        build_once(folder, wanted, lambda out: export_decode_step(llm, out / STEP_FILE))
        return cls(folder / STEP_FILE)

    @torch.no_grad()
    def greedy(self, logits: torch.Tensor, cache, position: int, processors, stopping, streamer,
               max_new_tokens: int, eos_token_id: int | None):
        """Continue a prompt whose last logits (1, vocab) and cache (a transformers cache over
        `position` tokens) torch computed. Returns (generated ids (1, n), the cache over the
        prompt and every generated token but the last, as a transformers DynamicCache)."""
        from transformers import DynamicCache

        layers = cache.layers
        keys = torch.stack([layer.keys for layer in layers]).numpy()
        values = torch.stack([layer.values for layer in layers]).numpy()
        generated = torch.zeros(1, 0, dtype=torch.long)
        if streamer is not None:
            streamer.put(generated)  # the prompt (empty: the reply starts from embeddings), as generate does
        scores = logits.float()
        for step in range(max_new_tokens):
            scores = processors(generated, scores)
            token = scores.argmax(-1, keepdim=True)
            generated = torch.cat([generated, token], 1)
            if streamer is not None:
                streamer.put(token[0])
            done = bool(stopping(generated, scores).any()) or int(token) == eos_token_id
            if done or step == max_new_tokens - 1:
                break
            out_logits, keys, values = self.session.run(None, {
                "ids": token.numpy(), "position": np.array([position], dtype=np.int64),
                "past_keys": keys, "past_values": values})
            position += 1
            scores = torch.from_numpy(out_logits[:, -1]).float()
        if streamer is not None:
            streamer.end()
        kept = DynamicCache()
        for index in range(keys.shape[0]):
            kept.update(torch.from_numpy(keys[index]), torch.from_numpy(values[index]), index)
        return generated, kept
