"""Training and evaluation data: the ES4R JSONL manifest (the layout of the ES4R authors' data files).

One sample per line: conversation_id, turn_id, dialogue_history = [{index, role:
speaker|listener, utterance, audio_path}], speaker_emotion (optional), response =
{utterance, audio_path?}. Audio paths are relative to the manifest. Speaker turns carry
the speech ES4R listens to; listener turns may carry audio too (the spoken corpus speaks
them with another voice) and are then heard as well, as in the paper, where a turn is a
speaker-listener exchange. Optional per-row fields of the spoken corpus: `variant`
(falling / rising / flat) and `affect_hint` (how the speaker sounds, given only to the
text-path teacher in training)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from es4r.audio import AudioError, load_audio, log_mel, turn_energy
from es4r.config import AudioConfig
from es4r.conversation import ASSISTANT, USER, format_history

logger = logging.getLogger(__name__)

SPEAKER, LISTENER = "speaker", "listener"
ROLE_TO_CHAT = {SPEAKER: USER, LISTENER: ASSISTANT}


class ManifestError(ValueError):
    """A bad manifest row; the message names file and line."""


@dataclass(frozen=True)
class HistoryTurn:
    index: int
    role: str  # speaker | listener
    utterance: str
    audio_path: Path | None


def sample_key(conversation_id: str, turn_id: int, variant: str | None) -> str:
    """One row's identity in every file made from a manifest (teacher targets, frozen references)."""
    return f"{conversation_id}:{turn_id}:{variant or ''}"


@dataclass(frozen=True)
class Sample:
    conversation_id: str
    turn_id: int
    history: tuple[HistoryTurn, ...]
    response: str
    response_audio: Path | None = None
    speaker_emotion: str | None = None
    source: str = ""  # "file:line", for error messages
    variant: str | None = None  # affect variant of the spoken corpus (falling / rising / flat)
    affect_hint: str | None = None  # how the speaker sounds: the teacher's hint in training

    @property
    def key(self) -> str:
        """Identifies a sample across epochs (teacher cache): conversation, turn, variant."""
        return sample_key(self.conversation_id, self.turn_id, self.variant)

    @property
    def speaker_turns(self) -> list[HistoryTurn]:
        return [t for t in self.history if t.role == SPEAKER]

    def history_turns(self) -> list[tuple[str, str]]:
        """(chat role, text) per turn, as `ES4RModel.prompt_parts` takes them."""
        return [(ROLE_TO_CHAT[t.role], t.utterance) for t in self.history]

    def history_text(self) -> str:
        return format_history(self.history_turns())


def _require(row: dict, key: str, kind: type, where: str):
    if key not in row:
        raise ManifestError(f"{where}: missing field {key!r}")
    if not isinstance(row[key], kind):
        raise ManifestError(f"{where}: field {key!r} should be {kind.__name__}, found {type(row[key]).__name__}")
    return row[key]


def parse_row(row: dict, base: Path, where: str, check_audio: bool = True) -> Sample:
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, found {type(row).__name__}")
    history_rows = _require(row, "dialogue_history", list, where)
    if not history_rows:
        raise ManifestError(f"{where}: dialogue_history is empty")
    history = []
    for position, turn in enumerate(history_rows):
        at = f"{where} (dialogue_history[{position}])"
        if not isinstance(turn, dict):
            raise ManifestError(f"{at}: expected an object")
        role = _require(turn, "role", str, at)
        if role not in ROLE_TO_CHAT:
            raise ManifestError(f"{at}: role {role!r} is not one of {sorted(ROLE_TO_CHAT)}")
        audio = turn.get("audio_path")
        audio_path = (base / audio) if audio else None
        if role == SPEAKER and audio_path is None:
            raise ManifestError(f"{at}: speaker turns need an audio_path")
        if check_audio and audio_path is not None and not audio_path.is_file():
            raise ManifestError(f"{at}: audio file {audio_path} does not exist")
        history.append(HistoryTurn(int(turn.get("index", position)), role, _require(turn, "utterance", str, at), audio_path))
    if history[-1].role != SPEAKER:
        raise ManifestError(f"{where}: the last dialogue_history turn must be the speaker's "
                            "(the response answers it); found a listener turn")
    response = _require(row, "response", dict, where)
    text = _require(response, "utterance", str, f"{where} (response)")
    if not text.strip():
        raise ManifestError(f"{where}: response utterance is empty")
    response_audio = (base / response["audio_path"]) if response.get("audio_path") else None
    for optional in ("variant", "affect_hint"):
        if row.get(optional) is not None and not isinstance(row[optional], str):
            raise ManifestError(f"{where}: field {optional!r} should be str, found {type(row[optional]).__name__}")
    return Sample(str(_require(row, "conversation_id", (str, int), where)), int(row.get("turn_id", 0)),
                  tuple(history), text.strip(), response_audio, row.get("speaker_emotion"), where,
                  row.get("variant"), row.get("affect_hint"))


def load_manifest(path: str | Path, check_audio: bool = True) -> list[Sample]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    samples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
            samples.append(parse_row(row, path.parent, where, check_audio))
    if not samples:
        raise ManifestError(f"manifest {path} has no samples")
    return samples


@dataclass(frozen=True)
class PreparedSample:
    sample: Sample
    features: list[torch.Tensor | None]  # per history turn: log-mel (n_mels, frames), None without audio
    energies: list[float]  # per speaker turn (steps 12-13 read the user's energy only)


def prepare_sample(sample: Sample, n_mels: int, audio: AudioConfig = AudioConfig()) -> PreparedSample:
    """Load and featurise every turn that has audio; bad audio becomes a ManifestError naming the row."""
    features, energies = [], []
    for turn in sample.history:
        if turn.audio_path is None:
            features.append(None)
            continue
        try:
            wave = load_audio(turn.audio_path, audio)
        except AudioError as error:
            raise ManifestError(f"{sample.source}: {turn.audio_path}: {error}") from None
        features.append(torch.from_numpy(log_mel(wave.samples, n_mels)))
        if turn.role == SPEAKER:
            energies.append(turn_energy(wave.samples, n_mels))
    return PreparedSample(sample, features, energies)


class ManifestDataset(torch.utils.data.Dataset):
    """Featurised samples, computed once and cached in memory (features are small)."""

    def __init__(self, samples: list[Sample], n_mels: int, audio: AudioConfig = AudioConfig()):
        self.samples, self.n_mels, self.audio = samples, n_mels, audio
        self._cache: dict[int, PreparedSample] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> PreparedSample:
        if index not in self._cache:
            self._cache[index] = prepare_sample(self.samples[index], self.n_mels, self.audio)
        return self._cache[index]


def collate(items: list[PreparedSample]) -> list[PreparedSample]:
    """Batches stay lists: the model builds both paths' padded inputs itself (ES4RModel.forward)."""
    return list(items)
