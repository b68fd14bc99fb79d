"""Whisper in ONNX Runtime on a CPU: its encoder, and the ASR's greedy decode steps.

Both are ONNX graphs built from the loaded Whisper's own weights (es4r/modeling/onnx_graph.py),
run by `WhisperRuntime`; the model in torch stays as it is, for
training and for anything else.

- The encoder (`encoder_graph`): the two convolutions, the first positions' embeddings (any
  even number of frames up to the 30 s window: the ASR's whole window or the speech path's
  turns plus a tail, es4r/modeling/whisper_window.py), the layers with ONNX Runtime's fused
  attention, the final norm. Measured on 2 cores, tiny.en over 30 s: 0.34 s against 0.45 s in
  torch, outputs within 3e-5. It stands in only where no gradient is wanted.
- The decoder (`step_graph`): the ASR's loop (es4r/modeling/asr.py) spent most of a transcript
  on per-token work — transformers' decoder modules one call at a time, and the output
  projection's 51,864 rows (80 MB in fp32 for tiny.en) read for every token. Each step here is
  one graph: token and position embeddings; per layer a self-attention whose key/value cache is
  a buffer written in place (ONNX Runtime's GroupQueryAttention, as in
  es4r/modeling/onnx_decode.py), a cross-attention over the recording's keys and values
  (computed once per recording, in torch, by the layers' own projections), the GELU MLP; the
  final norm and the projection of the last position. Its tokens are the torch loop's
  (tests/test_asr.py).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import torch

from es4r.modeling.asr import fixed_prompt
from es4r.modeling.onnx_graph import Graph, cache_in_place, off_cpu_fp32, session

logger = logging.getLogger(__name__)


def whisper_runtime_for(model) -> "WhisperRuntime | None":
    """A WhisperRuntime for `model` (WhisperForConditionalGeneration), or None — said in the
    log — when its weights are not fp32 on a CPU or its activation is not GELU."""
    if reason := off_cpu_fp32(model.proj_out.weight):
        logger.info("Whisper stays in torch: %s", reason)
        return None
    if model.config.activation_function != "gelu":
        logger.info("Whisper stays in torch: the ONNX graphs write out GELU, not %r", model.config.activation_function)
        return None
    return WhisperRuntime(model)


class WhisperGraph(Graph):
    """A graph of Whisper's parts: LayerNorm with bias, erf's GELU (torch's default), the MLP."""

    def norm(self, x: str, prefix: str, name: str) -> str:
        return self.add("LayerNormalization", [x, self.constant(name + ".w", self.weights[prefix + ".weight"]),
                                               self.constant(name + ".b", self.weights[prefix + ".bias"])],
                        name, axis=-1, epsilon=1e-5)

    def gelu(self, x: str, name: str) -> str:
        return self.add("Gelu", [x], name, domain="com.microsoft")

    def mlp(self, x: str, prefix: str, name: str) -> str:
        return self.linear(self.gelu(self.linear(x, prefix + "fc1", name + "_fc1"), name + "_gelu"), prefix + "fc2",
                           name + "_fc2")


def encoder_graph(model) -> tuple[bytes, dict[str, np.ndarray]]:
    """Whisper's encoder over (batch, n_mels, frames), any even `frames` up to its window:
    output `hidden` (batch, frames / 2, width) — what es4r/modeling/whisper_window.py's `encode`
    computes."""
    from onnx import TensorProto, helper

    config, encoder = model.config, model.get_encoder()
    g = WhisperGraph({name: value.detach().float().numpy() for name, value in encoder.state_dict().items()})
    w = g.weights
    x = g.gelu(g.add("Conv", ["mel", g.constant("conv1.w", w["conv1.weight"]), g.constant("conv1.b", w["conv1.bias"])],
                     "conv1", pads=[1, 1]), "conv1_gelu")
    x = g.gelu(g.add("Conv", [x, g.constant("conv2.w", w["conv2.weight"]), g.constant("conv2.b", w["conv2.bias"])],
                     "conv2", pads=[1, 1], strides=[2]), "conv2_gelu")
    x = g.add("Transpose", [x], "frames_first", perm=[0, 2, 1])  # (batch, positions, width)
    count = g.add("Slice", [g.add("Shape", [x], "shape"), g.shape("one", [1]), g.shape("two", [2])], "positions")
    first = g.add("Slice", [g.constant("positions.w", w["embed_positions.weight"]), g.shape("zero", [0]), count],
                  "first_positions")
    hidden = g.add("Add", [x, first], "embedded")
    for i in range(config.encoder_layers):
        p = f"layers.{i}."
        y = g.norm(hidden, p + "self_attn_layer_norm", f"attn_norm{i}")
        q, k, v = (g.linear(y, p + f"self_attn.{kind}_proj", f"{kind}{i}") for kind in "qkv")
        attended = g.add("MultiHeadAttention", [q, k, v], f"attn{i}", domain="com.microsoft",
                         num_heads=config.encoder_attention_heads)
        hidden = g.add("Add", [hidden, g.linear(attended, p + "self_attn.out_proj", f"out{i}")], f"after_attn{i}")
        hidden = g.add("Add", [hidden, g.mlp(g.norm(hidden, p + "final_layer_norm", f"mlp_norm{i}"), p, f"mlp{i}")],
                       f"after_mlp{i}")
    g.norm(hidden, "layer_norm", "hidden")
    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", config.num_mel_bins, "frames"])]
    outputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "positions", config.d_model])]
    return g.serialised("es4r_whisper_encoder", inputs, outputs), g.external


def step_graph(model) -> tuple[bytes, dict[str, np.ndarray]]:
    """Whisper's decoder reading S new tokens after those in its self-attention cache. Inputs:
    ids, positions (1, S) int64; seqlens_k (1,) = cached + S - 1; total_len () = cached + S;
    per layer past_k{i} / past_v{i} (1, heads, max_target_positions, head dim) and the
    recording's cross_k{i} (1, heads, head dim, frames) — keys transposed — and cross_v{i}
    (1, heads, frames, head dim). Outputs: logits (1, vocab) of the last position and
    present_k{i} / present_v{i}, to be bound to the pasts' buffers."""
    from onnx import TensorProto, helper

    config = model.config
    heads, width = config.decoder_attention_heads, config.d_model
    d = width // heads
    g = WhisperGraph({name: value.detach().float().numpy() for name, value in model.get_decoder().state_dict().items()})
    add = g.add
    tokens = add("Gather", [g.constant("embed", g.weights["embed_tokens.weight"]), "ids"], "tokens")
    hidden = add("Add", [tokens, add("Gather", [g.constant("positions.w", g.weights["embed_positions.weight"]),
                                                "positions"], "position_vectors")], "embedded")
    for i in range(config.decoder_layers):
        p = f"layers.{i}."
        x = g.norm(hidden, p + "self_attn_layer_norm", f"self_norm{i}")
        q, k, v = (g.linear(x, p + f"self_attn.{kind}_proj", f"self_{kind}{i}") for kind in "qkv")
        add("GroupQueryAttention", [q, k, v, f"past_k{i}", f"past_v{i}", "seqlens_k", "total_len"], f"self_attn{i}",
            outputs=[f"self_attn{i}", f"present_k{i}", f"present_v{i}"], domain="com.microsoft", num_heads=heads,
            kv_num_heads=heads, scale=float(d ** -0.5))
        hidden = add("Add", [hidden, g.linear(f"self_attn{i}", p + "self_attn.out_proj", f"self_out{i}")],
                     f"after_self{i}")
        x = g.norm(hidden, p + "encoder_attn_layer_norm", f"cross_norm{i}")
        q = add("Reshape", [g.linear(x, p + "encoder_attn.q_proj", f"cross_q{i}"), g.shape(f"split{i}", [0, 0, heads, d])],
                f"cross_q_heads{i}")
        q = add("Transpose", [q], f"cross_qh{i}", perm=[0, 2, 1, 3])  # (1, heads, S, d)
        scores = add("Mul", [add("MatMul", [q, f"cross_k{i}"], f"cross_dot{i}"),
                             g.constant(f"cross_scale{i}", np.array(d ** -0.5))], f"cross_scores{i}")
        mixed = add("MatMul", [add("Softmax", [scores], f"cross_p{i}", axis=-1), f"cross_v{i}"], f"cross_mix{i}")
        merged = add("Reshape", [add("Transpose", [mixed], f"cross_t{i}", perm=[0, 2, 1, 3]),
                                 g.shape(f"merge{i}", [0, 0, width])], f"cross_attn{i}")
        hidden = add("Add", [hidden, g.linear(merged, p + "encoder_attn.out_proj", f"cross_out{i}")], f"after_cross{i}")
        hidden = add("Add", [hidden, g.mlp(g.norm(hidden, p + "final_layer_norm", f"mlp_norm{i}"), p, f"mlp{i}")],
                     f"after_mlp{i}")
    last = add("Reshape", [g.last_position(hidden, "last_position"), g.shape("last.flat", [1, width])], "last_vector")
    out = model.proj_out.weight.detach().float().numpy()
    tied = np.shares_memory(out, g.weights["embed_tokens.weight"]) or np.array_equal(out, g.weights["embed_tokens.weight"])
    add("Gemm", [g.norm(last, "layer_norm", "final_norm"), "embed" if tied else g.constant("proj_out", out)], "logits",
        transB=1)  # the projection reads the embedding table as it is: no transposed copy
    cache = [1, heads, config.max_target_positions, d]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "tokens"]),
              helper.make_tensor_value_info("positions", TensorProto.INT64, [1, "tokens"]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
              helper.make_tensor_value_info("total_len", TensorProto.INT32, [])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, out.shape[0]])]
    for i in range(config.decoder_layers):
        inputs += [helper.make_tensor_value_info(f"past_{kv}{i}", TensorProto.FLOAT, cache) for kv in "kv"]
        inputs += [helper.make_tensor_value_info(f"cross_k{i}", TensorProto.FLOAT, [1, heads, d, "frames"]),
                   helper.make_tensor_value_info(f"cross_v{i}", TensorProto.FLOAT, [1, heads, "frames", d])]
        outputs += [helper.make_tensor_value_info(f"present_{kv}{i}", TensorProto.FLOAT, cache) for kv in "kv"]
    return g.serialised("es4r_whisper_decode_step", inputs, outputs), g.external


class WhisperRuntime:
    """One Whisper's encoder, and an English-only Whisper's decode steps, in ONNX Runtime sessions."""

    def __init__(self, model, threads: int | None = None):
        started = time.perf_counter()
        self.model = model
        config = model.config
        self.layers, self.heads = config.decoder_layers, config.decoder_attention_heads
        self.head_dim, self.max_tokens = config.d_model // self.heads, config.max_target_positions
        encoder, weights = encoder_graph(model)
        self.encoder, self.step = session(encoder, weights, threads), None
        held = sum(w.nbytes for w in weights.values())
        if fixed_prompt(model) is not None:  # a multilingual Whisper's ASR keeps transformers' generate
            step, weights = step_graph(model)
            self.step, held = session(step, weights, threads), held + sum(w.nbytes for w in weights.values())
        self._lock = threading.Lock()  # one cache: one transcript at a time
        self.build_seconds = time.perf_counter() - started
        logger.info("Whisper's encoder%s in ONNX Runtime: graphs built and loaded in %.1f s (%.0f MB of weights)",
                    " and ASR decode steps" if self.step else "", self.build_seconds, held / 1e6)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden state for (batch, n_mels, frames), any even `frames` up to
        Whisper's window — es4r/modeling/whisper_window.py's `encode`, without a gradient."""
        hidden = self.encoder.run(None, {"mel": features.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(hidden).to(features.dtype)

    def cross_keys_values(self, encoded: torch.Tensor) -> dict[str, np.ndarray]:
        """Each layer's cross-attention keys (transposed) and values over the recording's
        encoder states (1, frames, width), by the layers' own projections."""
        batch, frames, _ = encoded.shape
        out = {}
        with torch.no_grad():
            for i, layer in enumerate(self.model.get_decoder().layers):
                attention = layer.encoder_attn
                split = lambda x: x.view(batch, frames, self.heads, self.head_dim)  # noqa: E731
                out[f"cross_k{i}"] = split(attention.k_proj(encoded)).permute(0, 2, 3, 1).contiguous().numpy()
                out[f"cross_v{i}"] = split(attention.v_proj(encoded)).transpose(1, 2).contiguous().numpy()
        return out

    def tokens(self, encoded: torch.Tensor, prompt: list[int], limit: int, banned: np.ndarray,
               banned_first: np.ndarray, end: int) -> list[int]:
        """Greedy tokens after `prompt` over the encoder states `encoded` (1, frames, width):
        `banned` never, `banned_first` not at the first token; stops at `end` (left out) or
        after `limit` tokens."""
        import onnxruntime

        if self.step is None:
            raise ValueError("this Whisper's prompt is not fixed (multilingual): its ASR runs transformers' generate")
        if len(prompt) + limit > self.max_tokens:
            raise ValueError(f"prompt ({len(prompt)}) + {limit} tokens exceed Whisper's {self.max_tokens} positions")
        cross = self.cross_keys_values(encoded.float())
        with self._lock:
            binding = self.step.io_binding()
            _buffers, _values = cache_in_place(  # held here: the binding runs over their memory
                binding, self.layers, (1, self.heads, self.max_tokens, self.head_dim))
            for name, value in cross.items():
                binding.bind_cpu_input(name, value)
            logits = onnxruntime.OrtValue.ortvalue_from_numpy(np.zeros((1, self.model.proj_out.out_features), np.float32))
            binding.bind_ortvalue_output("logits", logits)
            step_ids, length, out = list(prompt), 0, []
            for step in range(limit):
                count = len(step_ids)
                binding.bind_cpu_input("ids", np.array([step_ids], np.int64))
                binding.bind_cpu_input("positions", np.arange(length, length + count, dtype=np.int64)[None])
                binding.bind_cpu_input("seqlens_k", np.array([length + count - 1], np.int32))
                binding.bind_cpu_input("total_len", np.array(length + count, np.int32))
                self.step.run_with_iobinding(binding)
                length += count
                scores = logits.numpy()[0].copy()
                scores[banned] = -np.inf
                if step == 0:
                    scores[banned_first] = -np.inf
                token = int(scores.argmax())
                if token == end:
                    break
                out.append(token)
                step_ids = [token]
        return out
