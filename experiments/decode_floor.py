"""How fast can an exact (fp32) decode of the embedded LLM be on this CPU at best? A decode
step must read every weight of the LLM once: this times just that — one matrix-vector
product per linear layer and the tied output head, nothing else — in ONNX Runtime (one graph
of them all) and in torch, and prints the floor in ms per token, the tokens/s ceiling and the
memory bandwidth it implies, beside the app's own decode step (es4r/modeling/onnx_decode.py).

    python -m experiments.decode_floor [--steps 40]

Anything faster than the ceiling must read fewer bytes per token. Quantising the weights would
change greedy replies (experiments/decode_runtimes.py measures those routes); the embedded LLM's
weights, though, are a dequantised Q4_1 GGUF and already lie on 4-bit blocks, so the app's step
can read those blocks instead — the same weights (es4r/modeling/weight_blocks.py). The script
times the app's step both ways."""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from es4r.pipeline import ES4RPipeline

logger = logging.getLogger("decode_floor")


def _weights(llm) -> list[torch.Tensor]:
    """(out, in) matrices a decode step reads: every linear layer's and the output head's."""
    return [module.weight.detach() for name, module in llm.named_modules()
            if isinstance(module, torch.nn.Linear) and "lora_" not in name]  # PLoRA's own parts are not read on text


def _median_seconds(run, steps: int) -> float:
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times[3:])


def _onnx_products(weights: list[torch.Tensor], threads: int):
    """One ONNX graph of every product, each fed the same input slice (no dependency chain)."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    matrices = [w.float().numpy().T.copy() for w in weights]  # (in, out), as MatMul reads them
    width = max(w.shape[0] for w in matrices)
    nodes, initializers, outputs = [], [], []
    for i, w in enumerate(matrices):
        initializers += [numpy_helper.from_array(w, f"w{i}"),
                         numpy_helper.from_array(np.array([0, 0]), f"start{i}"),
                         numpy_helper.from_array(np.array([1, w.shape[0]]), f"end{i}")]
        nodes += [helper.make_node("Slice", ["x", f"start{i}", f"end{i}"], [f"x{i}"]),
                  helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"y{i}"])]
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, w.shape[1]]))
    graph = helper.make_graph(nodes, "weights_once", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              outputs, initializer=initializers)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(helper.make_model(graph).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, width)).astype(np.float32)
    return lambda: session.run(None, {"x": x})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed repetitions (median)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pipeline = ES4RPipeline.from_preset("embedded")
    llm, threads = pipeline.model.llm.get_base_model(), torch.get_num_threads()
    weights = _weights(llm)
    megabytes = sum(w.numel() * w.element_size() for w in weights) / 1e6
    x = torch.randn(1, max(w.shape[1] for w in weights))
    floors = {"ONNX Runtime": _median_seconds(_onnx_products(weights, threads), args.steps),
              "torch": _median_seconds(lambda: [torch.nn.functional.linear(x[:, : w.shape[1]], w) for w in weights],
                                       args.steps)}
    print(f"embedded LLM: {len(weights)} weight matrices, {megabytes:.0f} MB in fp32 read per token; {threads} threads")
    for name, seconds in floors.items():
        print(f"{name}: weights read once in {seconds * 1e3:.1f} ms -> at most {1 / seconds:.1f} tokens/s "
              f"({megabytes / 1e3 / seconds:.1f} GB/s)")
    if pipeline.model.decoder is None:
        return 0
    from es4r.modeling.onnx_decode import OnnxDecoder

    built = pipeline.model.decoder  # the app's own, as its config reads the weights; the other one is built here
    for four_bit in (False, True):
        decoder = (built if (built.four_bit_layers > 0) == four_bit
                   else OnnxDecoder(llm, built.max_length, four_bit=four_bit))
        seconds = _median_seconds(_app_step(decoder), args.steps)
        read = (f"{decoder.four_bit_layers} of {decoder.linear_layers} linear layers as their 4-bit blocks"
                if four_bit else "every weight in fp32")
        print(f"the app's whole decode step (ONNX Runtime, cache in place, {CACHED} tokens cached; {read}, "
              f"{decoder.weight_megabytes:.0f} MB of weights held): {seconds * 1e3:.1f} ms -> {1 / seconds:.1f} tokens/s")
    return 0


CACHED = 300  # tokens already in the cache: a few turns of history


def _app_step(decoder):
    """One decode step of the app's own graph (es4r/modeling/onnx_decode.py), its cache bound in place."""
    step = decoder.bound_step(decoder.vocab)
    row, gate = decoder.embedding_rows[42][None, None], np.zeros((1, 1, 1), np.float32)
    return lambda: decoder._run(step.binding, row, gate, CACHED, 1)  # `step` (its buffers) lives with the closure


if __name__ == "__main__":
    raise SystemExit(main())
