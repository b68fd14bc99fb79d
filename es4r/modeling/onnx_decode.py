"""The LLM's greedy replies in ONNX Runtime, on a CPU: the prompt read and every decode step.

Measured on 2 cores: a decode step of the embedded SmolLM2 runs at ~47 tokens/s here with fp32
weights and ~69 reading the 4-bit blocks its weights already lie on (a dequantised Q4_1 GGUF;
es4r/modeling/weight_blocks.py), against ~29 in eager torch, with the same greedy replies
(scripts/check_same_replies.py onnx-decode). One ONNX graph built from the LLM's own weights
(`decode_graph`: RMSNorm, ONNX Runtime's GroupQueryAttention with rotary, SwiGLU) reads any
number of new positions after those in its key/value cache, a buffer of the context's full
length written in place: the graph's "present" outputs are bound to the very buffers its
"past" inputs read, so a step copies nothing but a token's embedding in and the logits out.
(A graph that takes the cache in and hands a grown one back, as a torch export does, ran only
~1.1x faster than torch: every step copied the whole cache.)

The same graph reads the prompt, PLoRA included: its LoRA layers add their update times a
`gate` input that is 1 exactly at S' (paper Sec. 3.2), the mask `speech_positions` gives the
torch layers. A speech-path prompt of ~116 positions took 0.27 s here against 0.43 s in torch
(scripts/check_same_replies.py speech-onnx). The greedy loop applies the processors, stopping
criteria and streamer calls `generate` does (repetition penalty, n-gram ban, the caller's
processors); sampling keeps `generate`."""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from es4r.modeling.onnx_graph import Graph, cache_in_place, off_cpu_fp32, session
from es4r.modeling.weight_blocks import BLOCK, four_bit_blocks

logger = logging.getLogger(__name__)

SUPPORTED = ("llama", "qwen2", "qwen3")  # the layouts decode_graph writes out
DECODE_MARGIN = 64  # spare positions in the cache beyond context + reply (speech cues, template tokens)


def decoder_for(llm, generation) -> "OnnxDecoder | None":
    """An ONNX Runtime decoder for `llm` (a PLoRA-wrapped LLM: its weights now) sized for
    `generation`'s context, or None — said in the log — when it cannot stand for it (not an
    fp32 LLM on a CPU, or a layout decode_graph does not write out)."""
    if reason := off_cpu_fp32(llm.get_input_embeddings().weight):
        logger.info("decode steps stay in torch: %s", reason)
        return None
    if reason := unsupported(llm.get_base_model().config):
        logger.info("decode steps stay in torch: ONNX Runtime decoding does not cover %s", reason)
        return None
    return OnnxDecoder(llm.get_base_model(), generation.max_context_tokens + generation.max_new_tokens + DECODE_MARGIN,
                       four_bit=generation.decode_weights == "blocks")


@contextmanager
def torch_on_one_thread():
    """Torch's per-step work in the greedy loop (logits processors over the vocabulary) on one
    thread: torch's OpenMP workers keep spinning after each of those small parallel ops and
    take a core from ONNX Runtime's next step. Measured on 2 cores, 10 held-out replies: a step
    20.4 -> 15.8 ms (the ONNX Runtime run itself 16.2 -> 14.3 ms, the repetition penalty
    2.4 -> 0.25 ms); the same tokens. Set through OpenMP's `omp_set_num_threads`, which holds
    for the calling thread only: `torch.set_num_threads` would also hand one thread for good
    to any other thread whose first torch call fell inside the loop."""
    openmp = _openmp()
    if openmp is None:
        yield
        return
    before = torch.get_num_threads()  # also settles this thread's torch threading before it is changed
    openmp.omp_set_num_threads(1)
    try:
        yield
    finally:
        openmp.omp_set_num_threads(before)


@functools.cache
def _openmp():
    """The OpenMP runtime torch runs on (its symbols are loaded into the process), or None."""
    try:
        runtime = ctypes.CDLL(None)
        runtime.omp_set_num_threads.argtypes = [ctypes.c_int]
        return runtime
    except (OSError, AttributeError):
        logger.info("no OpenMP runtime found: the decode loop's torch work keeps torch's thread count")
        return None


def greedy_processors(generation, processors: list):
    """The logits processors `generate` would apply for `generation` — repetition penalty,
    n-gram ban — then the caller's (None entries skipped), for `OnnxDecoder.greedy`."""
    from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    chain = LogitsProcessorList()
    if generation.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(generation.repetition_penalty))
    if generation.no_repeat_ngram_size:
        chain.append(NoRepeatNGramLogitsProcessor(generation.no_repeat_ngram_size))
    chain.extend(p for p in processors if p is not None)
    return chain


def unsupported(config) -> str | None:
    """Why decode_graph cannot stand for an LLM of this config, or None when it can."""
    if config.model_type not in SUPPORTED:
        return f"model type {config.model_type!r} (written out: {', '.join(SUPPORTED)})"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rope scaling {rope.get('rope_type')!r}"
    if getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    return None


def _sizes(config) -> tuple[int, int, int, int]:
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, heads, kv_heads, head_dim


@dataclass
class DecodeGraph:
    """`decode_graph`'s result: the serialised step, its weights by name, and how many of its
    linear layers read 4-bit blocks (es4r/modeling/weight_blocks.py) rather than fp32."""

    model: bytes
    weights: dict[str, np.ndarray]
    linear_layers: int
    four_bit_layers: int
    plora_layers: int


def decode_graph(llm: nn.Module, max_length: int, four_bit: bool = False) -> DecodeGraph:
    """`llm` reading S new positions after those in its cache — a prompt (S > 1) or one decode
    step (S = 1) — as a serialised ONNX model, its weights beside it (es4r/modeling/onnx_graph.py).
    With `four_bit`, a linear layer whose weight lies exactly on 4-bit blocks
    is read as those blocks (MatMulNBits + per-block offsets; es4r/modeling/weight_blocks.py) —
    the same weights in fewer bytes. A PLoRA layer (es4r/modeling/plora.py) adds its low-rank
    update times the `gate` input, 1 at S' positions and 0 elsewhere: PLoRA's mask (paper
    Sec. 3.2); its LoRA weights are copied now, so a decoder stands for the weights it was built
    from. Inputs: embeds (1, S, hidden) — the positions' input embeddings; gate (1, S, 1) when
    the LLM has PLoRA layers; seqlens_k (1,) = cached + S - 1; total_len () = cached + S; per
    layer past_k{i} / past_v{i} (1, kv heads, max_length, head dim). Outputs: logits (1, 1,
    vocab) of the last position and present_k{i} / present_v{i}, meant to be bound to the same
    buffers as the pasts."""
    from onnx import TensorProto, helper

    config = llm.config
    plora = _plora_parts(llm)
    layers, heads, kv_heads, d = _sizes(config)
    theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    eps = float(config.rms_norm_eps)
    # a PLoRA-wrapped layer keeps its own weight as "….base_layer.weight"; its LoRA parts are left out
    g = Graph({name.replace(".base_layer", ""): value.detach().float().numpy()
               for name, value in llm.state_dict().items() if "lora_" not in name})
    weights, add, constant, shape = g.weights, g.add, g.constant, g.shape

    def norm(x: str, weight: str, name: str) -> str:
        return add("SimplifiedLayerNormalization", [x, constant(name + ".w", weights[weight])], name, axis=-1, epsilon=eps)

    block_sums: dict[str, str] = {}  # input -> its sums over each block of 32, shared by the layers reading it
    counts = {"linear": 0, "four_bit": 0}

    def linear(x: str, prefix: str, name: str) -> str:
        y = base_linear(x, prefix, name)
        if prefix + ".reply_down" in weights:  # the reply tuning's low-rank term, at every position
            low = add("MatMul", [x, constant(name + ".rd", weights[prefix + ".reply_down"].T)], name + "_rlow")
            y = add("Add", [y, add("MatMul", [low, constant(name + ".ru", weights[prefix + ".reply_up"].T)],
                                   name + "_rup")], name + "_tuned")
        if prefix in plora:  # + gate * B(A(x)) * scaling, PLoRA's update where gate is 1
            down, up, scaling = plora[prefix]
            low = add("MatMul", [x, constant(name + ".la", down.T)], name + "_low")
            update = add("MatMul", [low, constant(name + ".lb", up.T * scaling)], name + "_update")
            y = add("Add", [y, add("Mul", [update, "gate"], name + "_gated")], name + "_plora")
        return y

    def base_linear(x: str, prefix: str, name: str) -> str:
        blocks = four_bit_blocks(torch.from_numpy(weights[prefix + ".weight"])) if four_bit else None
        counts["linear"] += 1
        if blocks is None:
            return g.linear(x, prefix, name)
        counts["four_bit"] += 1
        rows, columns = blocks.shape
        if x not in block_sums:
            split = add("Reshape", [x, shape(x + ".blocks", [0, 0, columns // BLOCK, BLOCK])], x + "_blocks")
            block_sums[x] = add("ReduceSum", [split, shape(x + ".last", [-1])], x + "_block_sums", keepdims=0)
        codes = add("MatMulNBits", [x, constant(name + ".q", blocks.packed, np.uint8), constant(name + ".s", blocks.steps)],
                    name + "_codes", domain="com.microsoft", K=columns, N=rows, bits=4, block_size=BLOCK,
                    accuracy_level=1)  # fp32 arithmetic: the inputs are not quantised
        y = add("Add", [codes, add("MatMul", [block_sums[x], constant(name + ".o", blocks.offsets)], name + "_offsets")],
                name)
        if prefix + ".bias" in weights:
            y = add("Add", [y, constant(name + ".b", weights[prefix + ".bias"])], name + "_b")
        return y

    def head_norm(x: str, weight: str, count: int, name: str) -> str:  # Qwen3: RMSNorm over each head
        heads_of = add("Reshape", [x, shape(name + ".heads", [0, 0, count, d])], name + "_heads")
        return add("Reshape", [norm(heads_of, weight, name + "_n"), shape(name + ".flat", [0, 0, count * d])], name)

    angles = np.arange(max_length)[:, None] * (1.0 / theta ** (np.arange(0, d, 2) / d))[None]
    constant("cos_cache", np.cos(angles))
    constant("sin_cache", np.sin(angles))
    hidden = "embeds"
    head = weights.get("lm_head.weight", weights["model.embed_tokens.weight"])
    for i in range(layers):
        p = f"model.layers.{i}."
        x = norm(hidden, p + "input_layernorm.weight", f"attn_norm{i}")
        q, k = linear(x, p + "self_attn.q_proj", f"q{i}"), linear(x, p + "self_attn.k_proj", f"k{i}")
        v = linear(x, p + "self_attn.v_proj", f"v{i}")
        if p + "self_attn.q_norm.weight" in weights:
            q = head_norm(q, p + "self_attn.q_norm.weight", heads, f"qn{i}")
            k = head_norm(k, p + "self_attn.k_norm.weight", kv_heads, f"kn{i}")
        add("GroupQueryAttention", [q, k, v, f"past_k{i}", f"past_v{i}", "seqlens_k", "total_len", "cos_cache",
                                    "sin_cache"], f"attn{i}", outputs=[f"attn{i}", f"present_k{i}", f"present_v{i}"],
            domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0,
            scale=float(d ** -0.5))
        hidden = add("Add", [hidden, linear(f"attn{i}", p + "self_attn.o_proj", f"o{i}")], f"after_attn{i}")
        x = norm(hidden, p + "post_attention_layernorm.weight", f"mlp_norm{i}")
        gate, up = linear(x, p + "mlp.gate_proj", f"gate{i}"), linear(x, p + "mlp.up_proj", f"up{i}")
        silu = add("Mul", [gate, add("Sigmoid", [gate], f"sig{i}")], f"silu{i}")
        hidden = add("Add", [hidden, linear(add("Mul", [silu, up], f"gated{i}"), p + "mlp.down_proj", f"down{i}")],
                     f"after_mlp{i}")
    last = g.last_position(hidden, "last_position")
    add("MatMul", [norm(last, "model.norm.weight", "final_norm"), constant("lm_head", head.T)], "logits")
    cache = [1, kv_heads, max_length, d]
    inputs = [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, [1, "positions", config.hidden_size])]
    if plora:
        inputs.append(helper.make_tensor_value_info("gate", TensorProto.FLOAT, [1, "positions", 1]))
    inputs += [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
               helper.make_tensor_value_info("total_len", TensorProto.INT32, [])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, head.shape[0]])]
    for i in range(layers):
        inputs += [helper.make_tensor_value_info(f"past_{kv}{i}", TensorProto.FLOAT, cache) for kv in "kv"]
        outputs += [helper.make_tensor_value_info(f"present_{kv}{i}", TensorProto.FLOAT, cache) for kv in "kv"]
    return DecodeGraph(g.serialised("es4r_decode_step", inputs, outputs), g.external, counts["linear"],
                       counts["four_bit"], len(plora))


def _plora_parts(llm: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Each PLoRA layer of `llm` by its module name: (A (r, in), B (out, r), scaling) of its
    active adapter."""
    parts = {}
    for name, module in llm.named_modules():
        if not hasattr(module, "lora_A") or module.disable_adapters:  # e.g. inside peft's disable_adapter()
            continue
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                parts[name.replace("base_model.model.", "")] = (
                    module.lora_A[adapter].weight.detach().float().numpy(),
                    module.lora_B[adapter].weight.detach().float().numpy(), float(module.scaling[adapter]))
    return parts


class OnnxDecoder:
    """Greedy decode steps of one LLM in an ONNX Runtime session, its cache in place."""

    def __init__(self, llm: nn.Module, max_length: int, threads: int | None = None, four_bit: bool = False):
        started = time.perf_counter()
        self.layers, _, self.kv_heads, self.head_dim = _sizes(llm.config)
        self.max_length = max_length
        graph = decode_graph(llm, max_length, four_bit)
        self.session = session(graph.model, graph.weights, threads)
        self._lock = threading.Lock()  # one cache buffer: one reply at a time
        self.build_seconds = time.perf_counter() - started
        self.four_bit_layers, self.linear_layers = graph.four_bit_layers, graph.linear_layers
        self.plora_layers = graph.plora_layers
        self.embedding_rows = llm.get_input_embeddings().weight.detach().numpy()  # the LLM's own, not a copy
        self.vocab = self.session.get_outputs()[0].shape[-1]
        self.weight_megabytes = sum(w.nbytes for w in graph.weights.values()) / 1e6
        if four_bit:
            logger.info("decode steps read %d of %d linear layers as the 4-bit blocks their weights lie on "
                        "(the same weights in fewer bytes); %d stay fp32, as does the output head",
                        graph.four_bit_layers, graph.linear_layers, graph.linear_layers - graph.four_bit_layers)
        logger.info("decode steps in ONNX Runtime: graph built and loaded in %.1f s (%.0f MB of weights)",
                    self.build_seconds, self.weight_megabytes)

    @torch.no_grad()
    def greedy(self, embeds: torch.Tensor, gate: torch.Tensor | None, cache, processors, stopping, streamer,
               max_new_tokens: int, eos_token_id: int | None):
        """Read a prompt's positions `embeds` (1, S, hidden) after those in `cache` (a
        transformers cache, or None), PLoRA acting where `gate` (1, S) is True, then continue
        it greedily. Returns (generated ids (1, n), the cache over the prompt and every
        generated token but the last, as a transformers DynamicCache)."""
        from transformers import DynamicCache

        length = cache.get_seq_length() if cache is not None else 0
        positions = embeds.shape[1]
        if length + positions + max_new_tokens > self.max_length:
            raise ValueError(f"prompt ({length + positions}) + reply ({max_new_tokens}) tokens exceed the decode "
                             f"cache ({self.max_length})")
        if gate is not None and bool(gate.any()) and not self.plora_layers:
            raise ValueError("this decoder was built without PLoRA layers: it cannot read S' positions")
        with self._lock, torch_on_one_thread():
            bound = self.bound_step(self.vocab)
            for index, layer in enumerate(cache.layers if cache is not None else ()):
                for buffer, tensor in zip(bound.caches[2 * index: 2 * index + 2], (layer.keys, layer.values)):
                    buffer[:, :, :length] = tensor.float().numpy()
            binding, out = bound.binding, bound.logits
            prompt_gate = gate.float()[..., None] if gate is not None else torch.zeros(1, positions, 1)
            self._run(binding, embeds.float().numpy(), prompt_gate.numpy(), length, positions)
            length += positions
            scores = torch.from_numpy(out.numpy()[:, -1].copy())
            generated, no_gate = torch.zeros(1, 0, dtype=torch.long), np.zeros((1, 1, 1), np.float32)
            if streamer is not None:
                streamer.put(generated)  # the prompt (empty: the reply starts from embeddings), as generate does
            for step in range(max_new_tokens):
                token = processors(generated, scores).argmax(-1, keepdim=True)
                generated = torch.cat([generated, token], 1)
                if streamer is not None:
                    streamer.put(token[0])
                if (step == max_new_tokens - 1 or int(token) == eos_token_id
                        or bool(stopping(generated, scores).any())):
                    break
                self._run(binding, self.embedding_rows[int(token)][None, None], no_gate, length, 1)
                length += 1
                scores = torch.from_numpy(out.numpy()[:, -1].copy())
            if streamer is not None:
                streamer.end()
            kept = DynamicCache()
            for index in range(self.layers):
                keys, values = (bound.caches[2 * index + j][:, :, :length] for j in (0, 1))
                kept.update(torch.from_numpy(keys.copy()), torch.from_numpy(values.copy()), index)
        return generated, kept

    def _run(self, binding, embeds: np.ndarray, gate: np.ndarray, cached: int, positions: int) -> None:
        """One run of the graph: `positions` new positions after `cached` ones."""
        binding.bind_cpu_input("embeds", np.ascontiguousarray(embeds, np.float32))
        if self.plora_layers:
            binding.bind_cpu_input("gate", np.ascontiguousarray(gate, np.float32))
        binding.bind_cpu_input("seqlens_k", np.array([cached + positions - 1], np.int32))
        binding.bind_cpu_input("total_len", np.array(cached + positions, np.int32))
        self.session.run_with_iobinding(binding)

    def bound_step(self, vocab: int) -> "BoundStep":
        """An IO binding of one decode step whose cache buffers (zeros, the full context long)
        are bound as both each layer's past and its present: a run writes its token's keys and
        values in place. The caller fills the buffers and binds the other inputs (`_run`)."""
        import onnxruntime

        binding = self.session.io_binding()
        caches, values = cache_in_place(binding, self.layers, (1, self.kv_heads, self.max_length, self.head_dim))
        logits = onnxruntime.OrtValue.ortvalue_from_numpy(np.zeros((1, 1, vocab), np.float32))
        binding.bind_ortvalue_output("logits", logits)
        return BoundStep(binding, caches, values, logits)


@dataclass
class BoundStep:
    """`OnnxDecoder.bound_step`: the binding and what it writes into, kept alive together."""

    binding: object
    caches: list[np.ndarray]  # keys, values of layer 0, then of layer 1, ...
    values: list  # the OrtValues over `caches`
    logits: object  # OrtValue (1, 1, vocab)
