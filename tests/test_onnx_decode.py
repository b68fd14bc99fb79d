"""Greedy decode steps in ONNX Runtime (es4r/modeling/onnx_decode.py) give the replies
transformers' generate gives: on the text and speech paths, with PLoRA acting at the speech
positions, the bans, the prefix cache and the streamer."""

from dataclasses import replace

import pytest
import torch

from es4r.modeling.onnx_decode import OnnxDecoder

HISTORIES = (
    [("user", "i had a rough week at work and my manager shouted at me")],
    [("user", "i had a rough week at work"), ("assistant", "that sounds hard"), ("user", "and my car broke down too")],
    [("user", "i passed my exam"), ("assistant", "well done"), ("user", "my parents are proud"),
     ("assistant", "they must be"), ("user", "we will celebrate tonight")],
)


@pytest.fixture(scope="module")
def decoder(tiny_model):
    return OnnxDecoder(tiny_model.llm.get_base_model(), max_length=512)


def _replies(model, decoder, features=None, **generate_args):
    generation = replace(model.config.generation, max_new_tokens=16, reuse_prefix=False)
    model.decoder = decoder
    try:
        return [model.generate(history, features(history) if features else None, generation, **generate_args)[0]
                for history in HISTORIES]
    finally:
        model.decoder = None


def test_the_text_path_replies_are_generates(tiny_model, decoder):
    for torch_reply, onnx_reply in zip(_replies(tiny_model, None), _replies(tiny_model, decoder)):
        assert onnx_reply.token_ids == torch_reply.token_ids and onnx_reply.text == torch_reply.text
    banned = _replies(tiny_model, decoder, avoid_in_opening=("sorry",))
    assert [r.token_ids for r in banned] == [r.token_ids for r in _replies(tiny_model, None, avoid_in_opening=("sorry",))]


def test_the_speech_path_replies_are_generates_with_plora_acting(tiny_model, decoder, speech_paths):
    from es4r.audio import load_audio, log_mel

    clip = torch.from_numpy(log_mel(load_audio(speech_paths[0]).samples, tiny_model.whisper.n_mels))
    features = lambda history: [clip if role == "user" else None for role, _ in history]  # noqa: E731
    lora_b = [p for name, p in tiny_model.llm.named_parameters() if "lora_B" in name]
    saved = [p.detach().clone() for p in lora_b]
    torch.manual_seed(0)
    with torch.no_grad():  # PLoRA at initialisation is zero; give it an effect to check
        for p in lora_b:
            p.normal_(std=0.5)
    try:  # a decoder holds the weights it was built from: this one has PLoRA's update
        acting = OnnxDecoder(tiny_model.llm.get_base_model(), max_length=512)
        torch_replies, onnx_replies = _replies(tiny_model, None, features), _replies(tiny_model, acting, features)
        stale = _replies(tiny_model, decoder, features)
    finally:
        with torch.no_grad():
            for p, value in zip(lora_b, saved):
                p.copy_(value)
    assert acting.plora_layers == 4 * tiny_model.llm.get_base_model().config.num_hidden_layers
    assert [r.token_ids for r in onnx_replies] == [r.token_ids for r in torch_replies]
    assert all(r.speech_path for r in onnx_replies)
    assert [r.token_ids for r in stale] != [r.token_ids for r in torch_replies]  # PLoRA's update made a difference


def test_the_prefix_cache_and_the_streamer_work_the_same(tiny_model, decoder):
    from es4r.reply_text import reply_streamer

    generation = replace(tiny_model.config.generation, max_new_tokens=16, reuse_prefix=True)
    shown: dict[str, list[str]] = {"torch": [], "onnx": []}
    results = {}
    for name, used in (("torch", None), ("onnx", decoder)):
        tiny_model.decoder, tiny_model.prefix_cache._cache = used, None
        try:
            for history in HISTORIES[1:]:  # the second reuses the first's cache
                streamer = reply_streamer(tiny_model.tokenizer, generation.max_sentences, shown[name].append)
                results.setdefault(name, []).append(tiny_model.generate(history, None, generation, streamer=streamer)[0])
        finally:
            tiny_model.decoder = None
    assert results["onnx"][1].reused_tokens == results["torch"][1].reused_tokens > 0
    assert [r.token_ids for r in results["onnx"]] == [r.token_ids for r in results["torch"]]
    assert shown["onnx"] == shown["torch"] and shown["onnx"]


def test_the_graph_carries_no_weights(tiny_model):
    """The weights reach ONNX Runtime beside the graph: serialising them into it cost the
    embedded model 3 s and a 4 GB memory peak at every start."""
    from es4r.modeling.onnx_decode import decode_graph

    graph = decode_graph(tiny_model.llm.get_base_model(), max_length=64)
    assert "lm_head" in graph.weights and graph.plora_layers > 0
    assert len(graph.model) < 0.05 * sum(w.nbytes for w in graph.weights.values())



def test_the_decode_loop_gives_torch_its_threads_back(tiny_model, decoder):
    """The greedy loop runs torch's per-step work on one thread (its spinning workers slowed
    ONNX Runtime's steps), for its own thread only — a thread that starts using torch meanwhile
    gets the usual count — and hands back the count it found, also when a step fails."""
    import threading

    suite_threads = torch.get_num_threads()  # one per test worker: two here, or one would prove nothing
    torch.set_num_threads(2)
    try:
        _check_threads_come_back(tiny_model, decoder, threading)
    finally:
        torch.set_num_threads(suite_threads)


def _check_threads_come_back(tiny_model, decoder, threading):
    before, seen, elsewhere = torch.get_num_threads(), [], []

    class Failing:  # a streamer: notes the thread counts at each token, fails at the third
        def put(self, ids):
            seen.append(torch.get_num_threads())
            other = threading.Thread(target=lambda: elsewhere.append(torch.get_num_threads()))
            other.start()
            other.join()
            if len(seen) == 3:
                raise RuntimeError("the page went away")

        def end(self):
            pass

    _replies(tiny_model, decoder)
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="the page went away"):
        _replies(tiny_model, decoder, streamer=Failing())
    assert seen == [1, 1, 1] and elsewhere == [before] * 3 and torch.get_num_threads() == before
