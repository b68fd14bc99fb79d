"""Building ONNX graphs from a torch module's weights, and the ONNX Runtime sessions that run them.

The graphs of es4r/modeling/onnx_decode.py (the LLM) and es4r/modeling/whisper_onnx.py
(Whisper) are written node by node from the loaded model's own weights, so a hub id and a local
folder go through the same code. The weights are left out of the serialised graph — each marked
as external data and handed to ONNX Runtime beside it (serialising the LLM's 540 MB into the
graph took 3 s and a 4 GB memory peak at every start)."""

from __future__ import annotations

import numpy as np
import torch

OPSETS = (("", 17), ("com.microsoft", 1))
IN_MEMORY = "es4r-in-memory"  # the "file" of a graph's external weights: never read, given to the session


class Graph:
    """An ONNX graph under construction: its nodes, and its weights by name (`external`)."""

    def __init__(self, weights: dict[str, np.ndarray] | None = None):
        self.weights = weights or {}  # the module's, by state-dict name, for the builders to read
        self.nodes, self.initializers, self.external = [], [], {}

    def constant(self, name: str, value: np.ndarray, dtype=np.float32) -> str:
        """A weight, left out of the serialised graph."""
        from onnx import TensorProto, helper

        self.external[name] = np.ascontiguousarray(value, dtype=dtype)
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(self.external[name].dtype),
                             dims=self.external[name].shape,
                             data_location=TensorProto.EXTERNAL)  # its data: external[name], given to the session
        tensor.external_data.add(key="location", value=IN_MEMORY)
        self.initializers.append(tensor)
        return name

    def shape(self, name: str, values: list[int]) -> str:
        """A small int64 constant (a shape, an axis, slice bounds), kept in the graph."""
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def add(self, op: str, inputs: list[str], output: str, domain: str = "", outputs: list[str] | None = None,
            **attributes) -> str:
        """A node; returns its (first) output's name."""
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs or [output], domain=domain, **attributes))
        return output

    def linear(self, x: str, prefix: str, name: str) -> str:
        """x @ weight.T (+ bias) of the nn.Linear whose state-dict names start with `prefix`."""
        y = self.add("MatMul", [x, self.constant(name + ".w", self.weights[prefix + ".weight"].T)], name)
        if prefix + ".bias" in self.weights:
            y = self.add("Add", [y, self.constant(name + ".b", self.weights[prefix + ".bias"])], name + "_b")
        return y

    def last_position(self, x: str, name: str) -> str:
        """(batch, S, width) -> (batch, 1, width): the last position only (its logits are the ones read)."""
        return self.add("Slice", [x, self.shape(name + ".start", [-1]),
                                  self.shape(name + ".end", [np.iinfo(np.int64).max]),
                                  self.shape(name + ".axis", [1])], name)

    def serialised(self, name: str, inputs: list, outputs: list) -> bytes:
        from onnx import helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, v) for domain, v in OPSETS])
        return model.SerializeToString()


def off_cpu_fp32(weight: torch.Tensor) -> str | None:
    """Why a module whose weights look like `weight` cannot run in these CPU graphs (not fp32
    on a CPU), or None when it can."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return f"ONNX Runtime here is for fp32 weights on a CPU (found {weight.device}, {weight.dtype})"
    return None


def cache_in_place(binding, layers: int, shape: tuple[int, ...]) -> tuple[list[np.ndarray], list]:
    """Bind one zeroed buffer of `shape` per layer and kind as both past_{k,v}{i} and
    present_{k,v}{i} of `binding`: a run writes its positions' keys and values in place.
    Returns the buffers (keys then values of layer 0, then layer 1, ...) and the OrtValues
    over them, which must live as long as the binding is used."""
    import onnxruntime

    buffers, values = [], []
    for index in range(layers):
        for kind in "kv":
            buffers.append(np.zeros(shape, np.float32))
            values.append(onnxruntime.OrtValue.ortvalue_from_numpy(buffers[-1]))  # shares the array's memory
            binding.bind_ortvalue_input(f"past_{kind}{index}", values[-1])
            binding.bind_ortvalue_output(f"present_{kind}{index}", values[-1])
    return buffers, values


def session(serialised: bytes, weights: dict[str, np.ndarray], threads: int | None = None):
    """An ONNX Runtime CPU session of a graph and its left-out weights (copied in)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.add_external_initializers(list(weights), [onnxruntime.OrtValue.ortvalue_from_numpy(w)
                                                      for w in weights.values()])
    return onnxruntime.InferenceSession(serialised, options, providers=["CPUExecutionProvider"])
