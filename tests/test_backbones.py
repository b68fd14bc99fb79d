"""Loading backbones from several threads at once (the app's turn and early-ASR threads, a
server beside a test) leaves every later load intact."""

import threading

import pytest

from es4r.modeling.backbones import load_llm, load_whisper
from es4r.presets import resolve_config


@pytest.fixture(scope="module")
def tiny_paths():
    backbones = resolve_config("tiny").backbones
    return backbones.whisper, backbones.llm


def _tied(model) -> bool:
    return model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_loads_in_parallel_threads_leave_transformers_able_to_tie_weights(tiny_paths):
    from transformers import PreTrainedModel

    whisper_path, llm_path = tiny_paths
    tie_weights = PreTrainedModel.tie_weights
    loaded, errors = [], []

    def work():
        try:
            for _ in range(6):
                loaded.append(load_whisper(whisper_path, "cpu").model)
                loaded.append(load_llm(llm_path, "cpu").model)
        except Exception as error:  # noqa: BLE001 - reported below with its thread's count
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert PreTrainedModel.tie_weights is tie_weights  # the class's own method, not a loader's no-op
    after = load_whisper(whisper_path, "cpu").model  # a load after the parallel ones
    for model in [*loaded, after]:
        assert not [name for name, p in model.named_parameters() if p.is_meta]
        assert _tied(model)
    assert len(loaded) == 48


def test_a_load_alone_ties_the_output_projection_to_the_embeddings(tiny_paths):
    """The counterpart: one thread's load is what the parallel ones must equal."""
    model = load_whisper(tiny_paths[0], "cpu").model
    assert _tied(model) and not any(p.is_meta for p in model.parameters())
