"""How fast could the embedded LLM decode on this CPU in other runtimes, and would its greedy
replies stay the same? A measurement of the routes not taken (the app's own ONNX Runtime
decode, es4r/modeling/onnx_decode.py, builds its graph by hand with the cache in place): it
exports one decode step of the embedded SmolLM2 (a token and the KV cache in,
logits and the grown cache out) to ONNX, runs it in ONNX Runtime in fp32 and, re-quantised to
4-bit blocks (`MatMulNBits`), and compares tokens/s and greedy replies with transformers.

    pip install onnxscript==0.7.2        # the exporter's (onnx is in requirements.txt)
    python -m experiments.decode_runtimes [--prompts 8] [--tokens 40] [--work runs/decode_runtimes]

Measured on 2 cores (2026-12-01, 8 prompts, 40 tokens), tokens/s and greedy replies identical
to transformers' own: the step in torch 30.4 (8 of 8); ONNX Runtime fp32 40.3 (8 of 8);
4-bit blocks of 32 with integer zero points 65.5 (accuracy level 0) and 80.5 (level 4), 0 of 8. The GGUF's own Q4_1 blocks
(scale and minimum per block) fit MatMulNBits exactly only with float zero points, whose CPU
kernel ran at 10.8 tokens/s."""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("decode_runtimes")
SYSTEM = "You are a warm, empathetic listener."
PROMPTS = ("I lost my job today and I don't know what to tell my family.",
           "My sister is getting married next week and I'm so excited!",
           "I've been feeling really lonely since I moved to the city.",
           "My dog has been sick for a week and the vet can't find out why.",
           "I finally finished my thesis after four years.",
           "My best friend moved abroad and I miss her every day.",
           "I got the apartment I wanted, with a view of the river!",
           "My grandfather is in hospital and nobody tells me anything.")


class DecodeStep(nn.Module):
    """One decode step of a Llama-layout causal LM written out (rotary, grouped-query
    attention, SwiGLU), so it exports as a plain graph: (token id, position, past keys, past
    values) -> (logits, keys, values), the caches shaped (layers, 1, kv heads, length, head dim)."""

    def __init__(self, llm):
        super().__init__()
        config = llm.config
        self.llm = llm
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.width = config.hidden_size
        self.head_dim = self.width // self.heads
        theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))

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
            q = rotate(attention.q_proj(normed).view(1, 1, self.heads, d).transpose(1, 2))
            k = rotate(attention.k_proj(normed).view(1, 1, self.kv_heads, d).transpose(1, 2))
            v = attention.v_proj(normed).view(1, 1, self.kv_heads, d).transpose(1, 2)
            k, v = torch.cat([past_keys[index], k], 2), torch.cat([past_values[index], v], 2)
            keys.append(k)
            values.append(v)
            group = self.heads // self.kv_heads
            weights = torch.softmax(q @ k.repeat_interleave(group, 1).transpose(-1, -2) / d ** 0.5, -1)
            mixed = (weights @ v.repeat_interleave(group, 1)).transpose(1, 2).reshape(1, 1, self.width)
            hidden = hidden + attention.o_proj(mixed)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.llm.lm_head(self.llm.model.norm(hidden)), torch.stack(keys), torch.stack(values)


def _prompt_cache(llm, ids):
    with torch.no_grad():
        out = llm(ids, use_cache=True)
    layers = out.past_key_values.layers
    keys = torch.stack([layer.keys for layer in layers])
    values = torch.stack([layer.values for layer in layers])
    return int(out.logits[0, -1].argmax()), keys, values


def _decode(step, first: int, keys, values, position: int, tokens: int, eos: int) -> tuple[list[int], float]:
    """Greedy decode with `step(ids, position, keys, values) -> (logits, keys, values)`."""
    generated, token = [first], first
    started = time.perf_counter()
    for _ in range(tokens - 1):
        if token == eos:
            break
        logits, keys, values = step(token, position, keys, values)
        token = int(np.asarray(logits)[0, -1].argmax())
        generated.append(token)
        position += 1
    return generated, (len(generated) - 1) / max(time.perf_counter() - started, 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--work", type=Path, default=Path("runs/decode_runtimes"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import onnxruntime as ort
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as error:
        raise SystemExit(f"needs onnx and onnxscript ({error}): pip install onnx==1.23.2 onnxscript==0.7.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from es4r.embedded.setup import prepare_embedded

    folder = prepare_embedded().llm
    tokenizer = AutoTokenizer.from_pretrained(folder)
    llm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    threads = torch.get_num_threads()
    step = DecodeStep(llm).eval()
    args.work.mkdir(parents=True, exist_ok=True)
    chats = []
    for text in PROMPTS[: args.prompts]:
        ids = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
                                            add_generation_prompt=True, return_tensors="pt")
        chats.append(ids if torch.is_tensor(ids) else ids["input_ids"])

    exported = args.work / "decode_step.onnx"
    first, keys, values = _prompt_cache(llm, chats[0])
    torch.onnx.export(step, (torch.tensor([[first]]), torch.tensor([chats[0].shape[1]]), keys, values), str(exported),
                      dynamo=True, input_names=["ids", "position", "past_keys", "past_values"],
                      output_names=["logits", "keys", "values"],
                      dynamic_shapes={"ids": None, "position": None, "past_keys": {3: torch.export.Dim("length", max=4096)},
                                      "past_values": {3: torch.export.Dim("length", max=4096)}})
    runtimes = {"ONNX Runtime fp32": exported}
    for level in (0, 4):
        import onnx

        quantizer = MatMulNBitsQuantizer(onnx.load(str(exported)), block_size=32, is_symmetric=False, accuracy_level=level)
        quantizer.process()
        path = args.work / f"decode_step_q4_level{level}.onnx"
        quantizer.model.save_model_to_file(str(path), use_external_data_format=True)
        runtimes[f"ONNX Runtime 4-bit (accuracy level {level})"] = path

    def torch_step(token, position, keys, values):
        with torch.no_grad():
            return step(torch.tensor([[token]]), torch.tensor([position]), keys, values)

    def session_step(session):
        def run(token, position, keys, values):
            return session.run(None, {"ids": np.array([[token]], dtype=np.int64),
                                      "position": np.array([position], dtype=np.int64),
                                      "past_keys": keys, "past_values": values})
        return run

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    steps = {"torch fp32 (the same step, eager)": (torch_step, False)}
    for name, path in runtimes.items():
        steps[name] = (session_step(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])), True)
    with torch.no_grad():  # transformers' own greedy replies
        reference = [llm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens, do_sample=False,
                                  pad_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:].tolist() for ids in chats]
    print(f"| runtime | tokens/s (median of {len(chats)}) | replies identical to transformers |\n|---|---|---|")
    for name, (run, numpy_io) in steps.items():
        rates, same = [], 0
        for index, ids in enumerate(chats):
            first, keys, values = _prompt_cache(llm, ids)
            if numpy_io:
                keys, values = keys.numpy(), values.numpy()
            tokens, rate = _decode(run, first, keys, values, ids.shape[1], args.tokens, tokenizer.eos_token_id)
            rates.append(rate)
            same += tokens == reference[index][: len(tokens)]
        print(f"| {name} | {statistics.median(rates):.1f} | {same} of {len(chats)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
