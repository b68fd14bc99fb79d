"""Whisper's greedy transcript decode in ONNX Runtime, on a CPU.

The ASR's decode loop (es4r/modeling/asr.py) spends most of a turn's transcript on per-token
work: transformers' decoder modules one call at a time, and the output projection — the
vocabulary's 51,864 rows, 80 MB in fp32 for tiny.en — read for every token. Here each step is
one ONNX graph built from the loaded Whisper's own decoder weights (so a hub id and a local
folder go through the same code): token and position embeddings, per layer a self-attention
whose key/value cache is a buffer written in place (ONNX Runtime's GroupQueryAttention, as in
es4r/modeling/onnx_decode.py), a cross-attention over the recording's encoder keys and values
(computed once per recording, in torch, by the layers' own projections), the GELU MLP, the final
norm and the output projection of the last position. The tokens are the torch loop's
(tests/test_asr.py); `python -m es4r bench` reports the ASR's time.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import torch

from es4r.modeling.onnx_decode import IN_MEMORY

logger = logging.getLogger(__name__)

OPSETS = (("", 17), ("com.microsoft", 1))


def whisper_decoder_for(model) -> "WhisperDecoder | None":
    """A WhisperDecoder for `model` (WhisperForConditionalGeneration), or None — said in the
    log — when its weights are not fp32 on a CPU."""
    weight = model.proj_out.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        logger.info("ASR decode steps stay in torch: ONNX Runtime decoding is for an fp32 Whisper on a CPU "
                    "(found %s, %s)", weight.device, weight.dtype)
        return None
    return WhisperDecoder(model)


def step_graph(model) -> tuple[bytes, dict[str, np.ndarray]]:
    """Whisper's decoder reading S new tokens after those in its self-attention cache, as a
    serialised ONNX model and its weights by name (handed to ONNX Runtime beside it). Inputs:
    ids, positions (1, S) int64; seqlens_k (1,) = cached + S - 1; total_len () = cached + S;
    per layer past_k{i} / past_v{i} (1, heads, max_target_positions, head dim) and the
    recording's cross_k{i} (1, heads, head dim, frames) — keys transposed — and cross_v{i}
    (1, heads, frames, head dim). Outputs: logits (1, vocab) of the last position and
    present_k{i} / present_v{i}, to be bound to the pasts' buffers."""
    from onnx import TensorProto, helper, numpy_helper

    config = model.config
    decoder = model.get_decoder()
    heads, width = config.decoder_attention_heads, config.d_model
    d = width // heads
    if config.activation_function != "gelu":
        raise ValueError(f"Whisper decoder activation {config.activation_function!r}: the graph writes out gelu")
    weights = {name: value.detach().float().numpy() for name, value in decoder.state_dict().items()}
    initializers, nodes, external = [], [], {}

    def constant(name: str, value: np.ndarray) -> str:
        external[name] = np.ascontiguousarray(value, dtype=np.float32)
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=external[name].shape,
                             data_location=TensorProto.EXTERNAL)  # its data: external[name], given to the session
        tensor.external_data.add(key="location", value=IN_MEMORY)
        initializers.append(tensor)
        return name

    def shape(name: str, values: list[int]) -> str:
        initializers.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def add(op: str, inputs: list[str], output: str, domain: str = "", **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [output], domain=domain, **attributes))
        return output

    def linear(x: str, prefix: str, name: str) -> str:
        y = add("MatMul", [x, constant(name + ".w", weights[prefix + ".weight"].T)], name)
        if prefix + ".bias" in weights:
            y = add("Add", [y, constant(name + ".b", weights[prefix + ".bias"])], name + "_b")
        return y

    def norm(x: str, prefix: str, name: str) -> str:
        return add("LayerNormalization", [x, constant(name + ".w", weights[prefix + ".weight"]),
                                          constant(name + ".b", weights[prefix + ".bias"])], name, axis=-1, epsilon=1e-5)

    def split_heads(x: str, name: str) -> str:  # (1, S, width) -> (1, heads, S, d)
        return add("Transpose", [add("Reshape", [x, shape(name + ".shape", [0, 0, heads, d])], name + "_heads")],
                   name, perm=[0, 2, 1, 3])

    tokens = add("Gather", [constant("embed", weights["embed_tokens.weight"]), "ids"], "tokens")
    hidden = add("Add", [tokens, add("Gather", [constant("positions.w", weights["embed_positions.weight"]), "positions"],
                                     "position_vectors")], "embedded")
    for i in range(config.decoder_layers):
        p = f"layers.{i}."
        x = norm(hidden, p + "self_attn_layer_norm", f"self_norm{i}")
        q, k, v = (linear(x, p + f"self_attn.{kind}_proj", f"self_{kind}{i}") for kind in "qkv")
        nodes.append(helper.make_node(
            "GroupQueryAttention", [q, k, v, f"past_k{i}", f"past_v{i}", "seqlens_k", "total_len"],
            [f"self_attn{i}", f"present_k{i}", f"present_v{i}"], domain="com.microsoft", num_heads=heads,
            kv_num_heads=heads, scale=float(d ** -0.5)))
        hidden = add("Add", [hidden, linear(f"self_attn{i}", p + "self_attn.out_proj", f"self_out{i}")], f"after_self{i}")
        x = norm(hidden, p + "encoder_attn_layer_norm", f"cross_norm{i}")
        q = split_heads(linear(x, p + "encoder_attn.q_proj", f"cross_q{i}"), f"cross_qh{i}")
        scores = add("Mul", [add("MatMul", [q, f"cross_k{i}"], f"cross_dot{i}"),
                             constant(f"cross_scale{i}", np.array(d ** -0.5))], f"cross_scores{i}")
        mixed = add("MatMul", [add("Softmax", [scores], f"cross_p{i}", axis=-1), f"cross_v{i}"], f"cross_mix{i}")
        merged = add("Reshape", [add("Transpose", [mixed], f"cross_t{i}", perm=[0, 2, 1, 3]),
                                 shape(f"cross_merge{i}", [0, 0, width])], f"cross_attn{i}")
        hidden = add("Add", [hidden, linear(merged, p + "encoder_attn.out_proj", f"cross_out{i}")], f"after_cross{i}")
        x = norm(hidden, p + "final_layer_norm", f"mlp_norm{i}")
        inner = add("Gelu", [linear(x, p + "fc1", f"fc1_{i}")], f"gelu{i}", domain="com.microsoft")
        hidden = add("Add", [hidden, linear(inner, p + "fc2", f"fc2_{i}")], f"after_mlp{i}")
    last = add("Reshape", [add("Slice", [hidden, shape("last.start", [-1]), shape("last.end", [np.iinfo(np.int64).max]),
                                         shape("last.axis", [1])], "last_position"),
                           shape("last.flat", [1, width])], "last_vector")
    out = model.proj_out.weight.detach().float().numpy()
    tied = np.shares_memory(out, weights["embed_tokens.weight"]) or np.array_equal(out, weights["embed_tokens.weight"])
    add("Gemm", [norm(last, "layer_norm", "final_norm"), "embed" if tied else constant("proj_out", out)], "logits",
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
    graph = helper.make_graph(nodes, "es4r_whisper_decode_step", inputs, outputs, initializer=initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, v) for domain, v in OPSETS])
    return onnx_model.SerializeToString(), external


class WhisperDecoder:
    """Greedy decode steps of one Whisper's decoder in an ONNX Runtime session."""

    def __init__(self, model, threads: int | None = None):
        import onnxruntime

        started = time.perf_counter()
        self.model = model
        config = model.config
        self.layers, self.heads = config.decoder_layers, config.decoder_attention_heads
        self.head_dim, self.max_tokens = config.d_model // self.heads, config.max_target_positions
        serialised, weights = step_graph(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.add_external_initializers(list(weights), [onnxruntime.OrtValue.ortvalue_from_numpy(w)
                                                          for w in weights.values()])
        self.session = onnxruntime.InferenceSession(serialised, options, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()  # one cache: one transcript at a time
        self.build_seconds = time.perf_counter() - started
        logger.info("ASR decode steps in ONNX Runtime: graph built and loaded in %.1f s (%.0f MB of weights)",
                    self.build_seconds, sum(w.nbytes for w in weights.values()) / 1e6)

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

        if len(prompt) + limit > self.max_tokens:
            raise ValueError(f"prompt ({len(prompt)}) + {limit} tokens exceed Whisper's {self.max_tokens} positions")
        cross = self.cross_keys_values(encoded.float())
        with self._lock:
            binding = self.session.io_binding()
            kept = []  # the OrtValues over the cache buffers live as long as the binding is used
            for i in range(self.layers):
                for kind in "kv":
                    kept.append(onnxruntime.OrtValue.ortvalue_from_numpy(
                        np.zeros((1, self.heads, self.max_tokens, self.head_dim), np.float32)))
                    binding.bind_ortvalue_input(f"past_{kind}{i}", kept[-1])
                    binding.bind_ortvalue_output(f"present_{kind}{i}", kept[-1])
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
                self.session.run_with_iobinding(binding)
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
