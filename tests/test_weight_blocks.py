"""Weights that lie on 4-bit blocks are read as those blocks (es4r/modeling/weight_blocks.py)
by the ONNX Runtime decode steps, and the replies stay transformers' own: only weights that
the blocks give back exactly are read that way."""

import numpy as np
import pytest
import torch

from es4r.modeling.onnx_decode import OnnxDecoder, decode_graph
from es4r.modeling.weight_blocks import four_bit_blocks, on_blocks

from test_onnx_decode import _replies


def test_blocks_give_back_every_weight():
    torch.manual_seed(0)
    weight = on_blocks(torch.randn(48, 96) * 0.05)
    blocks = four_bit_blocks(weight)
    assert blocks is not None and blocks.shape == (48, 96)
    assert blocks.packed.dtype == np.uint8 and blocks.packed.shape == (48, 3, 16)
    assert np.allclose(blocks.weight(), weight.numpy(), rtol=0, atol=1e-6 * float(weight.abs().max()))


def test_weights_off_the_blocks_stay_fp32():
    torch.manual_seed(0)
    assert four_bit_blocks(torch.randn(16, 64)) is None  # plain random weights: no 16-level blocks
    weight = on_blocks(torch.randn(16, 64))
    weight[3, 40] = torch.nextafter(weight[3, 40], torch.tensor(1.0))  # one weight one ulp off its block
    assert four_bit_blocks(weight) is None
    assert four_bit_blocks(on_blocks(torch.randn(16, 64)).double()) is None  # not fp32
    assert four_bit_blocks(torch.zeros(4, 48)) is None  # rows not made of whole blocks


@pytest.fixture(scope="module")
def blocks_model(tiny_dirs):
    """The tiny ES4R model with every linear layer of its LLM on 4-bit blocks (as the embedded
    LLM, a dequantised Q4_1 GGUF, is)."""
    from es4r.config import preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel

    torch.manual_seed(0)
    llm = load_llm(str(tiny_dirs["llm"]), "cpu")
    with torch.no_grad():
        for name, module in llm.model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                module.weight.copy_(on_blocks(module.weight))
    return ES4RModel(load_whisper(str(tiny_dirs["whisper"]), "cpu"), llm, preset_config("tiny")).eval()


def _decoder(model, four_bit: bool) -> OnnxDecoder:
    return OnnxDecoder(model.llm.get_base_model(), max_length=512, four_bit=four_bit)


def test_every_linear_layer_on_blocks_is_read_as_blocks(blocks_model, tiny_model):
    with blocks_model.llm.disable_adapter():
        graph = decode_graph(blocks_model.llm.get_base_model(), 64, four_bit=True)
    layers = blocks_model.llm.get_base_model().config.num_hidden_layers
    assert graph.linear_layers == 7 * layers and graph.four_bit_layers == graph.linear_layers
    assert graph.model.count(b"MatMulNBits") == graph.four_bit_layers
    fp32 = decode_graph(blocks_model.llm.get_base_model(), 64, four_bit=False)
    assert fp32.four_bit_layers == 0 and b"MatMulNBits" not in fp32.model
    assert sum(w.nbytes for w in graph.weights.values()) < sum(w.nbytes for w in fp32.weights.values())
    with tiny_model.llm.disable_adapter():  # random weights lie on no blocks: all fp32, said so
        assert decode_graph(tiny_model.llm.get_base_model(), 64, four_bit=True).four_bit_layers == 0


def test_logits_of_a_step_match_fp32(blocks_model):
    """One step from the same cache: the blocks' logits are the fp32 graph's to float rounding."""
    outputs = {}
    for four_bit in (False, True):
        decoder = _decoder(blocks_model, four_bit)
        step = decoder.bound_step(decoder.session.get_outputs()[0].shape[-1])
        rng = np.random.default_rng(0)
        for buffer in step.caches:
            buffer[:, :, :20] = rng.standard_normal(buffer[:, :, :20].shape).astype(np.float32)
        decoder._run(step.binding, decoder.embedding_rows[7][None, None], np.zeros((1, 1, 1)), 20, 1)
        outputs[four_bit] = step.logits.numpy().copy()
    assert np.abs(outputs[True] - outputs[False]).max() < 1e-5 * np.abs(outputs[False]).max()


def test_replies_on_blocks_are_generates_on_both_paths(blocks_model, speech_paths):
    from es4r.audio import load_audio, log_mel

    decoder = _decoder(blocks_model, four_bit=True)
    assert decoder.four_bit_layers == decoder.linear_layers > 0
    assert [r.token_ids for r in _replies(blocks_model, decoder)] == [r.token_ids for r in _replies(blocks_model, None)]
    clip = torch.from_numpy(log_mel(load_audio(speech_paths[0]).samples, blocks_model.whisper.n_mels))
    features = lambda history: [clip if role == "user" else None for role, _ in history]  # noqa: E731
    with torch.no_grad():  # PLoRA at initialisation is zero; give it an effect at the speech positions
        for name, p in blocks_model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    decoder = _decoder(blocks_model, four_bit=True)  # built from the weights PLoRA now has
    speech = _replies(blocks_model, decoder, features)
    assert all(r.speech_path for r in speech)
    assert [r.token_ids for r in speech] == [r.token_ids for r in _replies(blocks_model, None, features)]


def _reply_adapter(llm_dir, folder, std=0.3):
    """A reply-tuning adapter as peft saves it, with a large random update so it shows."""
    from peft import LoraConfig, get_peft_model

    from es4r.config import ReplyTuningConfig
    from es4r.modeling.backbones import load_llm

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=list(ReplyTuningConfig().target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(load_llm(str(llm_dir), "cpu").model, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(std=std, generator=torch.Generator().manual_seed(2))
    model.save_pretrained(folder)
    return folder


def test_a_tuned_llm_is_still_read_as_blocks_and_replies_as_torch_does(tiny_dirs, tmp_path, speech_paths):
    """The reply adapter beside 4-bit weights: every layer still MatMulNBits, the low-rank term
    added in the graph as in torch, on both paths; and it changes the replies."""
    from es4r.audio import load_audio, log_mel
    from es4r.config import preset_config
    from es4r.modeling.backbones import load_llm, load_whisper
    from es4r.modeling.model import ES4RModel
    from es4r.modeling.reply_adapter import TunedLinear

    adapter = _reply_adapter(tiny_dirs["llm"], tmp_path / "adapter")
    models = {}
    for tuned in (False, True):
        torch.manual_seed(0)
        llm = load_llm(str(tiny_dirs["llm"]), "cpu", reply_adapter=str(adapter) if tuned else None)
        with torch.no_grad():
            for name, module in llm.model.named_modules():
                if isinstance(module, torch.nn.Linear) and ".layers." in name:
                    module.weight.copy_(on_blocks(module.weight))
        models[tuned] = ES4RModel(load_whisper(str(tiny_dirs["whisper"]), "cpu"), llm, preset_config("tiny")).eval()
    model = models[True]
    layers = model.llm.get_base_model().config.num_hidden_layers
    assert sum(isinstance(m, TunedLinear) for m in model.llm.modules()) == 7 * layers
    decoder = _decoder(model, four_bit=True)
    assert decoder.four_bit_layers == decoder.linear_layers == 7 * layers
    text = _replies(model, decoder)
    assert [r.token_ids for r in text] == [r.token_ids for r in _replies(model, None)]
    assert [r.token_ids for r in text] != [r.token_ids for r in _replies(models[False], None)]
    clip = torch.from_numpy(log_mel(load_audio(speech_paths[0]).samples, model.whisper.n_mels))
    features = lambda history: [clip if role == "user" else None for role, _ in history]  # noqa: E731
    with torch.no_grad():  # PLoRA on top of the tuned layers, with an effect at the speech positions
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    decoder = _decoder(model, four_bit=True)
    assert decoder.plora_layers == 4 * layers
    speech = _replies(model, decoder, features)
    assert [r.token_ids for r in speech] == [r.token_ids for r in _replies(model, None, features)]
