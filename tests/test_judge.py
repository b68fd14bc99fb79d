"""LLM judge: score parsing, an OpenAI-compatible fake server on 127.0.0.1, and the
transformers backend on tiny local Llama models (one random, one wired to answer)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from es4r.evaluation.judge import (
    CRITERIA,
    JUDGE_PROMPTS,
    MAX_CONSECUTIVE_BACKEND_ERRORS,
    JudgeBackendError,
    JudgeRecord,
    JudgeSample,
    OpenAIJudge,
    TransformersJudge,
    build_messages,
    judge_samples,
    parse_score,
    summarise,
)

SAMPLES = [
    JudgeSample.from_history(
        "dlg1_t2",
        [{"role": "speaker", "utterance": "My dog died yesterday."},
         {"role": "listener", "utterance": "Oh no."},
         {"role": "speaker", "utterance": "I keep looking for her."}],
        "I'm so sorry. It makes sense that you still look for her.",
    ),
    JudgeSample.from_history("dlg2_t1", [("speaker", "I got the job!")], "Congratulations!"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<score>7</score>", 7.0),
        ("Warm and relevant. <score> 8.5 </score>", 8.5),
        ("<SCORE>10</SCORE>", 10.0),
        ("<score>0</score>", 0.0),
        ("<score>6</score> and later <score>2</score>", 6.0),  # the first tag counts
        ("<think>maybe <score>3</score>?</think> Final: <score>9</score>", 9.0),
        ("<think>still thinking <score>3</score>", None),  # unclosed reasoning
        ("I would give it 7.", None),
        ("<score></score>", None),
        ("<score>7/10</score>", None),
        ("<score>seven</score>", None),
        ("<score>11</score>", None),
        ("<score>-1</score>", None),
        ("<score>nan</score>", None),
        ("<score>7", None),
        ("", None),
    ],
)
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_one_prompt_per_criterion_with_context_and_reply():
    assert set(JUDGE_PROMPTS) == set(CRITERIA) == {"quality", "empathy", "completeness",
                                                  "fluency"}
    for criterion in CRITERIA:
        messages = build_messages(SAMPLES[0], criterion)
        user = messages[-1]["content"]
        assert criterion.capitalize() in user
        assert "Speaker: I keep looking for her." in user
        assert "Listener: Oh no." in user
        assert SAMPLES[0].reply in user
        assert "<score>" in user
    assert build_messages(SAMPLES[0], "empathy") != build_messages(SAMPLES[0], "fluency")


def test_summarise_means_over_valid_scores_and_counts_failures():
    records = [
        JudgeRecord("a", "empathy", 8.0, "<score>8</score>", None, "t"),
        JudgeRecord("b", "empathy", 6.0, "<score>6</score>", None, "t"),
        JudgeRecord("c", "empathy", None, "garbage", "no score", "t"),
        JudgeRecord("a", "fluency", None, "garbage", "no score", "t"),
    ]
    summary = summarise(records)
    assert summary.mean("empathy") == pytest.approx(7.0)  # the failure is not a zero
    assert summary.mean("fluency") is None
    assert summary.as_dict()["empathy"] == {"mean": 7.0, "n_scored": 2, "n_failed": 1}
    assert summary.n_failed == 2


def test_unknown_criterion_lists_the_choices():
    with pytest.raises(ValueError, match="choose from quality, empathy"):
        judge_samples(SAMPLES, backend=None, criteria=["kindness"])


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Scores 8, except for Empathy prompts, where it forgets the tag."""

    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, dict(self.headers), body))
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"internal error")
            return
        prompt = body["messages"][-1]["content"]
        content = ("I like it a lot." if "Rate the listener's reply for Empathy" in prompt
                   else "Clear and kind. <score>8</score>")
        reply = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                      "content": content}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        """Keep the test output quiet."""


@pytest.fixture
def fake_server():
    _FakeOpenAI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_openai_judge_end_to_end(fake_server):
    judge = OpenAIJudge(fake_server, model="judge-model", api_key="test-key", timeout_s=5)
    records = judge_samples(SAMPLES, judge)

    assert len(records) == len(SAMPLES) * len(CRITERIA)
    path, headers, body = _FakeOpenAI.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer test-key"
    assert body["model"] == "judge-model" and body["temperature"] == 0
    empathy = [record for record in records if record.criterion == "empathy"]
    assert all(not record.ok and record.raw == "I like it a lot." for record in empathy)
    assert all(record.score == 8.0 for record in records if record.criterion != "empathy")

    summary = summarise(records)
    assert summary.mean("quality") == 8.0
    assert summary.mean("empathy") is None
    assert summary.as_dict()["empathy"]["n_failed"] == len(SAMPLES)


def test_openai_judge_base_url_with_v1_and_http_errors(fake_server):
    judge = OpenAIJudge(fake_server + "/v1/", model="broken", timeout_s=5)
    records = judge_samples(SAMPLES[:1], judge, criteria=["fluency"])
    assert _FakeOpenAI.requests[0][0] == "/v1/chat/completions"
    assert "Authorization" not in _FakeOpenAI.requests[0][1]
    assert not records[0].ok and "HTTP 500" in records[0].error
    with pytest.raises(JudgeBackendError, match="in a row failed"):
        judge_samples(SAMPLES * MAX_CONSECUTIVE_BACKEND_ERRORS, judge, criteria=["fluency"])


# --- tiny local causal LMs --------------------------------------------------------------

SPECIALS = ["<pad>", "<unk>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>"]
WORDS = ["<score>", "7", "</score>", "the", "reply", "is", "kind", "score", "dog", "sorry"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# The wired model's next-token table: after the assistant tag it says "<score> 7 </score>".
ANSWER_CHAIN = ["<|assistant|>", "<score>", "7", "</score>", "<eos>"]


def _save_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
        additional_special_tokens=SPECIALS[3:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return vocab


def _tiny_llama(vocab_size):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=vocab_size, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=2, bos_token_id=None,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _wire_answer(model, vocab):
    """Make the model a bigram table: embeddings one-hot, the layer's residual updates
    zero, so the final norm sees the last token and lm_head maps it to the next one."""
    size = len(vocab)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(size))
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        next_token = torch.full((size,), vocab["<eos>"])
        for current, following in zip(ANSWER_CHAIN, ANSWER_CHAIN[1:]):
            next_token[vocab[current]] = vocab[following]
        # lm_head (vocab, hidden): weight[next(i), i] = 1, so token i's logits peak at next(i)
        model.lm_head.weight.copy_(torch.eye(size)[next_token].T)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    random_dir = tmp_path_factory.mktemp("random_judge")
    wired_dir = tmp_path_factory.mktemp("wired_judge")
    vocab = _save_tokenizer(random_dir)
    _save_tokenizer(wired_dir)
    _tiny_llama(len(vocab)).save_pretrained(random_dir)
    wired = _tiny_llama(len(vocab))
    _wire_answer(wired, vocab)
    wired.save_pretrained(wired_dir)
    return random_dir, wired_dir


def test_transformers_judge_records_garbage_as_failure(tiny_models):
    random_dir, _ = tiny_models
    judge = TransformersJudge(random_dir, max_new_tokens=12)
    records = judge_samples(SAMPLES, judge, criteria=["empathy", "fluency"])
    assert len(records) == 4
    assert all(not record.ok for record in records)
    assert all(record.raw.strip() and "no valid <score>" in record.error for record in records)
    summary = summarise(records)
    assert summary.mean("empathy") is None and summary.n_failed == 4


def test_transformers_judge_reads_a_real_answer(tiny_models):
    _, wired_dir = tiny_models
    judge = TransformersJudge(wired_dir, max_new_tokens=12)
    assert parse_score(judge.complete(build_messages(SAMPLES[0], "quality"))) == 7.0
    records = judge_samples(SAMPLES, judge)
    assert [record.score for record in records] == [7.0] * len(SAMPLES) * len(CRITERIA)
    assert summarise(records).mean("completeness") == 7.0


def test_transformers_judge_needs_a_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        TransformersJudge(tmp_path / "missing")
