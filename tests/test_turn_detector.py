"""Hands-free turns: where a turn starts and ends in a microphone stream (es4r/turn_detector.py),
on real read speech (tests/data) with silence, noise and pauses around it."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from es4r.config import TurnTakingConfig
from es4r.turn_detector import WINDOW, WINDOW_S, SpeechPaused, SpeechStarted, TurnDetector, TurnEnded
from es4r.vad import speech_seconds

RATE = 16_000


@pytest.fixture(scope="module")
def clips(speech_paths) -> list[np.ndarray]:
    return [sf.read(str(path), dtype="float32")[0] for path in speech_paths]


@pytest.fixture(scope="module")
def detector() -> TurnDetector:
    return TurnDetector()


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), np.float32)


def _events(detector: TurnDetector, stream: np.ndarray, chunk: int | None = None) -> list:
    detector.reset()
    if chunk is None:
        return detector.feed(stream) + detector.flush()
    events = []
    for start in range(0, len(stream), chunk):
        events += detector.feed(stream[start:start + chunk])
    return events + detector.flush()


def _kinds(events: list) -> list[type]:
    """The events' kinds, a pause inside the turn (SpeechPaused, voided by more speech) left out
    unless it is the one the turn ended in: that one must carry the turn's own samples."""
    kinds = []
    for index, event in enumerate(events):
        if isinstance(event, SpeechPaused):
            following = events[index + 1] if index + 1 < len(events) else None
            if not isinstance(following, TurnEnded):
                continue
            assert np.array_equal(event.samples, following.samples) and event.end == following.end
        kinds.append(type(event))
    return kinds


def _turns(events: list) -> list[TurnEnded]:
    return [e for e in events if isinstance(e, TurnEnded)]


def test_a_spoken_turn_in_silence_is_one_turn_with_all_its_speech(detector, clips):
    for clip in clips:
        stream = np.concatenate([_silence(0.5), clip, _silence(1.0)])
        events = _events(detector, stream)
        assert _kinds(events) == [SpeechStarted, SpeechPaused, TurnEnded]  # the pause's turn is the turn
        turn = events[-1]
        assert events[0].at == turn.start and 0.5 <= turn.start < turn.end <= 0.5 + len(clip) / RATE + WINDOW_S
        assert speech_seconds(turn.samples) == pytest.approx(speech_seconds(clip), abs=0.1)  # no speech lost
        first = round(turn.start / WINDOW_S) - detector.pad_windows  # the stream's own samples, padding included
        assert np.array_equal(turn.samples, stream[first * WINDOW: first * WINDOW + len(turn.samples)])
        assert len(turn.samples) == (round((turn.end - turn.start) / WINDOW_S) + 2 * detector.pad_windows) * WINDOW
        # the pause rule decided the end: end_pause_s after the last speech, to the window
        assert turn.ended_at - turn.end == pytest.approx(detector.config.end_pause_s, abs=WINDOW_S)


def test_a_pause_inside_a_sentence_does_not_end_the_turn_and_a_longer_one_does(detector, clips):
    first, second = clips[0], clips[2]
    joined = _turns(_events(detector, np.concatenate([first, _silence(0.2), second, _silence(1.0)])))
    assert len(joined) == 1 and joined[0].end - joined[0].start > (len(first) + len(second)) / RATE - 1.0
    apart = _turns(_events(detector, np.concatenate([first, _silence(1.0), second, _silence(1.0)])))
    assert len(apart) == 2 and apart[0].end < len(first) / RATE + WINDOW_S < apart[1].start
    longer = TurnDetector(TurnTakingConfig(end_pause_s=1.6))  # configurable: a 1 s pause is then inside the turn
    assert len(_turns(_events(longer, np.concatenate([first, _silence(1.0), second, _silence(2.0)])))) == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_hum_and_silence_start_no_turn(detector, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(RATE * 3) / RATE
    for stream in (_silence(3.0), 0.5 * rng.standard_normal(RATE * 3), 0.02 * rng.standard_normal(RATE * 3),
                   0.3 * np.sin(2 * np.pi * (50 + 10 * seed) * t), 0.2 * np.sign(np.sin(2 * np.pi * 440 * t))):
        assert _events(detector, stream.astype(np.float32)) == []


def test_a_burst_shorter_than_min_speech_starts_no_turn_and_a_longer_one_does(detector, clips):
    clip = clips[1]
    middle = len(clip) // 2
    strict = TurnDetector(TurnTakingConfig(min_speech_s=1.0))
    for seconds, turns, strict_turns in ((0.12, 0, 0), (0.6, 1, 0), (1.5, 1, 1)):
        burst = np.concatenate([_silence(0.5), clip[middle: middle + int(RATE * seconds)], _silence(1.0)])
        assert len(_turns(_events(detector, burst))) == turns, seconds
        assert len(_turns(_events(strict, burst))) == strict_turns, seconds


def test_the_turns_do_not_depend_on_how_the_stream_is_chunked(detector, clips):
    stream = np.concatenate([_silence(0.3), clips[0], _silence(0.9), clips[2], _silence(0.2), clips[1], _silence(1.0)])
    whole = _events(detector, stream)
    rng = np.random.default_rng(7)
    for chunk in (160, WINDOW, 1_000, int(rng.integers(1, 4_000)), 8_000):
        chunked = _events(detector, stream, chunk)
        assert [type(e) for e in chunked] == [type(e) for e in whole]
        for a, b in zip(_turns(chunked), _turns(whole)):
            assert (a.start, a.end, a.ended_at) == (b.start, b.end, b.ended_at) and np.array_equal(a.samples, b.samples)


def test_a_long_turn_ends_at_the_limit_and_a_stopped_stream_ends_an_open_turn(clips):
    capped = TurnDetector(TurnTakingConfig(max_turn_s=2.0))
    turns = _turns(_events(capped, np.concatenate([clips[1], _silence(1.0)])))
    assert turns and len(turns[0].samples) / RATE <= 2.0 + WINDOW_S
    detector = TurnDetector()
    events = detector.feed(clips[1][: RATE * 2])  # still speaking when the stream stops
    assert detector.in_turn and not _turns(events)
    assert len(_turns(detector.flush())) == 1 and not detector.in_turn and detector.flush() == []


def test_a_chunk_with_nans_is_read_as_silence(detector, clips):
    broken = np.full(RATE // 2, np.nan, np.float32)
    events = _events(detector, np.concatenate([broken, clips[0], _silence(1.0)]))
    assert _kinds(events) == [SpeechStarted, SpeechPaused, TurnEnded]


class _Scripted:
    """A stand-in for Silero that gives each window the next probability of a script: the
    rules checked to the window, on probabilities a real model gives only by chance."""

    def __init__(self, probabilities):
        self.probabilities = list(probabilities)

    def reset_states(self):
        self.read = 0

    def __call__(self, window, rate):
        self.read += 1
        return self.probabilities[self.read - 1]


def _scripted(probabilities, **settings) -> list:
    detector = TurnDetector(TurnTakingConfig(**settings), model=_Scripted(probabilities))
    return detector.feed(np.zeros(len(probabilities) * WINDOW, np.float32)) + detector.flush()


def test_speech_must_last_min_speech_s_to_start_a_turn():
    needed = int(np.ceil(TurnTakingConfig().min_speech_s / WINDOW_S))
    assert _scripted([0.9] * (needed - 1) + [0.0] * 40) == []
    started = _scripted([0.9] * needed + [0.0] * 40)
    assert _kinds(started) == [SpeechStarted, SpeechPaused, TurnEnded]
    assert _scripted([0.9] * needed + [0.0] * 40, min_speech_s=needed * WINDOW_S * 2) == []  # configurable


def test_windows_between_the_thresholds_continue_what_was_before_them():
    """Hysteresis: a window between threshold - hysteresis and threshold is speech after speech
    and quiet after quiet, so a dip to 0.4 inside a word does not start the pause, nor does a
    lift to 0.4 inside a pause end it."""
    speech, pause = [0.9] * 15, int(np.ceil(TurnTakingConfig().end_pause_s / WINDOW_S))
    assert len(_turns(_scripted(speech + [0.4] * 2 * pause + speech + [0.0] * 2 * pause))) == 1
    assert len(_turns(_scripted(speech + [0.3] * 2 * pause + speech + [0.0] * 2 * pause))) == 2
    assert len(_turns(_scripted(speech + [0.0] + [0.4] * 2 * pause + speech + [0.0] * 2 * pause))) == 2
    ended = _turns(_scripted(speech + [0.0] * (pause - 1) + speech + [0.0] * 2 * pause))
    assert len(ended) == 1  # one window short of the pause: the turn goes on


def test_a_browser_stream_at_48_khz_stereo_gives_the_turn_a_recorded_file_would(clips):
    """Chunks as Gradio streams them (int16, two channels, 48 kHz): the turn is the same
    samples as the whole stream brought to 16 kHz mono at once (es4r.audio.prepare_waveform,
    what a recorded file goes through), cut where the detector cut it."""
    import librosa

    from es4r.audio import prepare_waveform
    from es4r.hands_free import MicrophoneStream

    mono = np.concatenate([_silence(0.4), clips[0], _silence(1.0)])
    high = librosa.resample(mono, orig_sr=RATE, target_sr=48_000)
    stereo = (np.stack([high, 0.8 * high], axis=1) * 32_000).astype(np.int16)
    stream, events = MicrophoneStream(), []
    for start in range(0, len(stereo), 4_800):  # 0.1 s chunks
        events += stream.feed(48_000, stereo[start:start + 4_800])
    events += stream.close()
    turns = _turns(events)
    assert len(turns) == 1 and _kinds(events) == [SpeechStarted, SpeechPaused, TurnEnded]
    at_once = prepare_waveform(stereo, 48_000).samples
    first = round(turns[0].start / WINDOW_S) - stream.detector.pad_windows
    assert np.array_equal(turns[0].samples, at_once[first * WINDOW: first * WINDOW + len(turns[0].samples)])
    assert speech_seconds(turns[0].samples) == pytest.approx(speech_seconds(clips[0]), abs=0.15)


def test_a_pause_announces_the_turn_it_would_end_and_more_speech_makes_it_void():
    """SpeechPaused comes once the quiet reaches early_work_s (after the turn's padding), before the turn ends, with the
    samples TurnEnded will carry; a pause the person speaks through announces a shorter turn than
    the one that ends, and a later pause announces the whole. No pause is announced before a turn
    has started, nor for a burst too short to start one."""
    config = TurnTakingConfig()
    early = round(config.early_work_s / WINDOW_S)
    speech, end = [0.9] * 15, int(np.ceil(config.end_pause_s / WINDOW_S))
    assert [type(e) for e in _scripted(speech + [0.0] * (early - 1) + speech + [0.0] * 2 * end)] == \
        [SpeechStarted, SpeechPaused, TurnEnded]  # a breath shorter than early_work_s announces nothing
    events = _scripted(speech + [0.0] * (end - 2) + speech + [0.0] * 2 * end)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechPaused, SpeechPaused, TurnEnded]
    first, second, turn = events[1], events[2], events[3]
    assert len(first.samples) < len(turn.samples) and np.array_equal(second.samples, turn.samples)
    assert (second.start, second.end) == (turn.start, turn.end)
    assert turn.ended_at - second.end == pytest.approx(end * WINDOW_S) and second.end < turn.ended_at
    needed = int(np.ceil(config.min_speech_s / WINDOW_S))
    assert _scripted([0.9] * (needed - 1) + [0.0] * 40) == []  # too short: nothing, no pause either
    assert [type(e) for e in _scripted([0.0] * 40)] == []
    assert second.at - second.end == pytest.approx(early * WINDOW_S)  # announced early_work_s after the speech
    later = _scripted(speech + [0.0] * 2 * end, early_work_s=0.5)  # configurable
    assert later[1].at - later[1].end == pytest.approx(round(0.5 / WINDOW_S) * WINDOW_S)
    assert np.array_equal(later[1].samples, later[2].samples)


def test_early_transcripts_give_each_file_its_own_once_and_settle_leaves_nothing_running():
    """`take` gives the transcript begun for that file, once; a pause spoken through voids the
    one not yet started; after `settle` the worker is idle and nothing begun is left to take."""
    import threading

    from es4r.hands_free import EarlyTranscripts

    release, started, calls = threading.Event(), threading.Event(), []

    def transcribe(path: str) -> str:
        calls.append(path)
        started.set()
        release.wait(5)
        return f"words of {path}"

    early = EarlyTranscripts(transcribe)
    early.begin("a.wav")
    assert started.wait(5)
    early.begin("b.wav")  # queued behind a.wav, which runs
    early.begin("c.wav")  # b.wav, not started, is void
    release.set()
    assert early.take("a.wav") == "words of a.wav" and early.take("a.wav") is None
    assert early.take("b.wav") is None and early.take("c.wav") == "words of c.wav"
    assert calls == ["a.wav", "c.wav"]
    release.clear(), started.clear()
    early.begin("d.wav")
    assert started.wait(5)
    early.begin("e.wav")  # d.wav runs, e.wav waits: cancelled by settle
    threading.Timer(0.3, release.set).start()
    early.settle()  # waits for d.wav's transcript, then forgets it
    assert release.is_set() and early.take("d.wav") is None and early.take("e.wav") is None
    early._worker.submit(lambda: None).result(5)  # the worker is free again, and e.wav never ran
    assert calls[-1] == "d.wav"
    early.settle()  # nothing begun: returns at once
