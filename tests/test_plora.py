import pytest
import torch

from es4r.config import PLoRAConfig
from es4r.modeling.backbones import load_llm
from es4r.modeling.plora import apply_plora, load_plora_state_dict, plora_state_dict, speech_positions


@pytest.fixture()
def wrapped(tiny_dirs):
    torch.manual_seed(0)
    llm = load_llm(str(tiny_dirs["llm"]), "cpu").model
    base_state = {k: v.clone() for k, v in llm.state_dict().items()}
    model = apply_plora(llm, PLoRAConfig(r=4, alpha=4, dropout=0.0)).eval()
    return model, base_state


def _hidden(model, embeds, mask):
    with speech_positions(mask):
        return model(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]


def test_uses_peft_lora_layers_on_attention_projections(wrapped):
    from peft.tuners.lora import Linear as LoraLinear

    model, _ = wrapped
    layers = {name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, LoraLinear)}
    assert layers == {"q_proj", "k_proj", "v_proj", "o_proj"}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_text_positions_exact_base_speech_positions_differ(wrapped):
    model, _ = wrapped
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # non-zero LoRA, as after training
    embeds = torch.randn(1, 10, model.get_input_embeddings().embedding_dim)
    with model.disable_adapter():
        base = model(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 6:] = True  # speech at the end: positions before it are causal-independent of it
    plora = _hidden(model, embeds, mask)
    assert torch.equal(plora[0, :6], base[0, :6])  # text positions: exactly the base model
    assert not torch.allclose(plora[0, 6:], base[0, 6:])  # speech positions: LoRA changes them
    assert torch.equal(_hidden(model, embeds, None), base)  # no mask: base model everywhere


def test_no_merge(wrapped):
    model, _ = wrapped
    with pytest.raises(RuntimeError, match="speech positions"):
        model.merge_adapter()


def test_state_dict_round_trip_and_strict(wrapped):
    model, _ = wrapped
    state = plora_state_dict(model)
    changed = {k: torch.randn_like(v) for k, v in state.items()}
    load_plora_state_dict(model, changed)
    assert all(torch.equal(plora_state_dict(model)[k], v) for k, v in changed.items())
    with pytest.raises(ValueError, match="missing"):
        load_plora_state_dict(model, dict(list(changed.items())[1:]))
    key = next(iter(changed))
    with pytest.raises(ValueError, match="shape"):
        load_plora_state_dict(model, {**changed, key: torch.zeros(3, 3)})
