"""The paper's LLM judge: a reply is scored 0..10 on Quality, Empathy, Completeness and
Fluency, one prompt per criterion, the judge answering with the score inside
`<score></score>`.

A reply the judge does not score properly (no tag, not a number, outside 0..10) is kept
as a *failure* with the judge's raw text, never as a crash or a zero, so the means in
`summarise` are over real scores and the failure counts say how far to trust them.

Backends: any local causal LM through its chat template (`TransformersJudge`) or any
OpenAI-compatible server (`OpenAIJudge`: plain HTTP, no SDK).
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

SCORE_MIN = 0.0
SCORE_MAX = 10.0
JUDGE_MAX_NEW_TOKENS = 256  # room for a short justification before the tag
REQUEST_TIMEOUT_S = 60.0
MAX_CONSECUTIVE_BACKEND_ERRORS = 3  # then the backend is taken to be down, not flaky
RAW_SNIPPET_CHARS = 200  # how much of a bad answer goes into a log line

# The criteria, in the paper's order, with what the judge is asked to look at.
CRITERIA: dict[str, str] = {
    "quality": "Is the reply relevant to the conversation, coherent, appropriate and "
               "helpful as the listener's next turn?",
    "empathy": "Does the reply recognise how the speaker feels and respond with "
               "understanding, warmth and care?",
    "completeness": "Does the reply take up everything the speaker's last turn calls for "
                    "(their situation, their feelings, any question or request) instead "
                    "of leaving parts unanswered?",
    "fluency": "Is the reply grammatical, natural and easy to follow, as a fluent "
               "speaker would say it?",
}

JUDGE_SYSTEM_PROMPT = (
    "You are an impartial evaluator of replies in emotional-support conversations. "
    "You judge one criterion at a time and always end with the score in <score></score>."
)

_PROMPT_TEMPLATE = """Rate the listener's reply for {label}.
{label}: {definition}

Conversation so far:
{{context}}

Listener's reply:
{{reply}}

Judge {label} only. Explain in one or two sentences, then give an integer score from \
0 (worst) to 10 (best) as <score>N</score>."""

# One prompt template per criterion; {context} and {reply} are filled per sample.
JUDGE_PROMPTS: dict[str, str] = {
    name: _PROMPT_TEMPLATE.format(label=name.capitalize(), definition=definition)
    for name, definition in CRITERIA.items()
}

_SCORE_TAG = re.compile(r"<score>(.*?)</score>", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)


class JudgeBackendError(RuntimeError):
    """The judge could not be asked (HTTP error, timeout, unreadable response)."""


class JudgeBackend(Protocol):
    """What `judge_samples` needs: a name for the records and one chat completion."""

    name: str

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The judge's answer text to an OpenAI-style list of chat messages."""


@dataclass(frozen=True)
class JudgeSample:
    """One reply to be judged in its dialogue context."""

    sample_id: str
    history: tuple[tuple[str, str], ...]  # (role, utterance), oldest first; roles speaker|listener
    reply: str  # the generated listener reply under evaluation

    @classmethod
    def from_history(cls, sample_id: str, history: Iterable[Mapping[str, str] | Sequence[str]],
                     reply: str) -> JudgeSample:
        """Build from manifest-style turns ({'role', 'utterance'} dicts) or (role, text) pairs."""
        turns = tuple(
            (turn["role"], turn["utterance"]) if isinstance(turn, Mapping) else tuple(turn)
            for turn in history
        )
        return cls(sample_id=sample_id, history=turns, reply=reply)


@dataclass(frozen=True)
class JudgeRecord:
    """The judge's verdict on one (sample, criterion)."""

    sample_id: str
    criterion: str
    score: float | None  # 0..10; None when the judge's answer held no valid score
    raw: str  # the judge's full answer ("" when the backend failed)
    error: str | None  # why this is a failure; None for a valid score
    backend: str  # which judge produced it

    @property
    def ok(self) -> bool:
        return self.score is not None


@dataclass(frozen=True)
class CriterionSummary:
    criterion: str
    mean: float | None  # over valid scores only; None when there were none
    n_scored: int
    n_failed: int


@dataclass(frozen=True)
class JudgeSummary:
    criteria: tuple[CriterionSummary, ...]  # in the order of CRITERIA

    def mean(self, criterion: str) -> float | None:
        return next(row.mean for row in self.criteria if row.criterion == criterion)

    @property
    def n_failed(self) -> int:
        return sum(row.n_failed for row in self.criteria)

    def as_dict(self) -> dict[str, dict[str, float | int | None]]:
        return {row.criterion: {"mean": row.mean, "n_scored": row.n_scored,
                                "n_failed": row.n_failed} for row in self.criteria}


def parse_score(text: str) -> float | None:
    """The number in the first `<score>x</score>` of `text`, if it is a plain number in 0..10.

    Reasoning blocks (`<think>...</think>`, or an unclosed `<think>` running to the end)
    are ignored, so a score only mentioned while thinking does not count. Anything else
    (no tag, '7/10', 'seven', NaN, 11) gives None."""
    answer = _THINKING.sub("", text)
    match = _SCORE_TAG.search(answer)
    if match is None:
        return None
    inner = match.group(1).strip()
    if not _NUMBER.fullmatch(inner):
        return None
    value = float(inner)
    if not math.isfinite(value) or not SCORE_MIN <= value <= SCORE_MAX:
        return None
    return value


def format_context(history: Sequence[tuple[str, str]]) -> str:
    """Dialogue history as 'Speaker: ...' / 'Listener: ...' lines."""
    if not history:
        return "(no earlier turns)"
    return "\n".join(f"{role.capitalize()}: {utterance}" for role, utterance in history)


def build_messages(sample: JudgeSample, criterion: str) -> list[dict[str, str]]:
    """The chat messages asking the judge to score `sample` on `criterion`."""
    prompt = JUDGE_PROMPTS[criterion].format(context=format_context(sample.history),
                                             reply=sample.reply)
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT},
            {"role": "user", "content": prompt}]


def _check_criteria(criteria: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in criteria if name not in CRITERIA]
    if unknown or not criteria:
        raise ValueError(
            f"unknown or no judge criteria {unknown or list(criteria)}; "
            f"choose from {', '.join(CRITERIA)}"
        )
    return tuple(criteria)


def judge_samples(samples: Iterable[JudgeSample], backend: JudgeBackend,
                  criteria: Sequence[str] = tuple(CRITERIA)) -> list[JudgeRecord]:
    """Ask `backend` to score every sample on every criterion; one record per pair.

    Unparseable answers and single backend errors become failure records. After
    MAX_CONSECUTIVE_BACKEND_ERRORS backend errors in a row the backend is taken to be
    down and JudgeBackendError is raised rather than failing every remaining sample."""
    chosen = _check_criteria(criteria)
    records: list[JudgeRecord] = []
    consecutive_errors = 0
    for sample in samples:
        for criterion in chosen:
            try:
                raw = backend.complete(build_messages(sample, criterion))
            except JudgeBackendError as error:
                consecutive_errors += 1
                if consecutive_errors >= MAX_CONSECUTIVE_BACKEND_ERRORS:
                    raise JudgeBackendError(
                        f"{consecutive_errors} judge calls in a row failed (last: {error}); "
                        f"check that {backend.name} is running and reachable"
                    ) from error
                logger.warning("judge %s failed on %s/%s: %s", backend.name,
                               sample.sample_id, criterion, error)
                records.append(JudgeRecord(sample.sample_id, criterion, None, "",
                                           f"backend error: {error}", backend.name))
                continue
            consecutive_errors = 0
            score = parse_score(raw)
            error_text = None
            if score is None:
                error_text = (f"no valid <score>{SCORE_MIN:g}..{SCORE_MAX:g}</score> "
                              "in the judge's answer")
                logger.warning("judge %s gave no valid score for %s/%s: %r", backend.name,
                               sample.sample_id, criterion, raw[:RAW_SNIPPET_CHARS])
            records.append(JudgeRecord(sample.sample_id, criterion, score, raw, error_text,
                                       backend.name))
    return records


def summarise(records: Iterable[JudgeRecord]) -> JudgeSummary:
    """Mean valid score and failure count per criterion (criteria with no records omitted)."""
    by_criterion: dict[str, list[JudgeRecord]] = {}
    for record in records:
        by_criterion.setdefault(record.criterion, []).append(record)
    order = [name for name in CRITERIA if name in by_criterion]
    order += [name for name in by_criterion if name not in CRITERIA]
    rows = []
    for name in order:
        scores = [record.score for record in by_criterion[name] if record.score is not None]
        rows.append(CriterionSummary(
            criterion=name,
            mean=sum(scores) / len(scores) if scores else None,
            n_scored=len(scores),
            n_failed=len(by_criterion[name]) - len(scores),
        ))
    return JudgeSummary(criteria=tuple(rows))


class OpenAIJudge:
    """A judge behind any OpenAI-compatible `/v1/chat/completions` endpoint (greedy)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout_s: float = REQUEST_TIMEOUT_S,
                 max_tokens: int = JUDGE_MAX_NEW_TOKENS) -> None:
        base = base_url.rstrip("/")
        self.url = f"{base}/chat/completions" if base.endswith("/v1") else (
            f"{base}/v1/chat/completions")
        self.model = model
        self.api_key = api_key  # None: no Authorization header (local servers)
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.name = f"openai:{model}@{base}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:RAW_SNIPPET_CHARS].decode(errors="replace")
            raise JudgeBackendError(f"HTTP {error.code} from {self.url}: {detail}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise JudgeBackendError(f"cannot reach {self.url}: {error}") from error
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise JudgeBackendError(
                f"expected an OpenAI chat completion from {self.url}, found "
                f"{payload[:RAW_SNIPPET_CHARS]!r}"
            ) from error
        return content if isinstance(content, str) else ""


class TransformersJudge:
    """A judge from a local causal-LM folder (config, weights, tokenizer with a chat
    template), decoding greedily; nothing is downloaded."""

    def __init__(self, model_path: str | Path, max_new_tokens: int = JUDGE_MAX_NEW_TOKENS,
                 device: str = "cpu", chat_template_kwargs: Mapping[str, object] | None = None
                 ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from es4r.build_lock import BUILD_LOCK

        folder = Path(model_path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"expected a local model folder with config.json, found {folder}; "
                "save the judge LLM with save_pretrained() or pass its folder"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"the tokenizer in {folder} has no chat template; use an instruct model "
                "or set tokenizer.chat_template before saving it"
            )
        with BUILD_LOCK:
            self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        self.model.to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.chat_template_kwargs = dict(chat_template_kwargs or {})  # e.g. enable_thinking
        self.name = f"transformers:{folder.name}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        prompt = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                         do_sample=False, pad_token_id=pad_id)
        prompt_length = inputs["input_ids"].shape[1]
        return self.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True)
