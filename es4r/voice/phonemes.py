"""English text -> IPA phonemes with espeak-ng, the way StyleTTS2 was trained on them.

StyleTTS2's LibriTTS model saw `phonemizer`'s espeak backend (en-us, punctuation kept,
stress marks on) followed by NLTK's word tokeniser, which puts spaces around punctuation.
We reproduce that tokenisation with one regular expression instead of depending on NLTK."""

from __future__ import annotations

import functools
import logging
import re
import shutil

from es4r.voice.base import TTSError

logger = logging.getLogger(__name__)

ESPEAK_LANGUAGE = "en-us"  # the accent the LibriTTS checkpoint was trained on
INSTALL_HINT = (
    "install espeak-ng (Debian/Ubuntu: `apt-get install espeak-ng`; macOS: `brew install "
    "espeak-ng`) and the Python package `phonemizer`"
)
# Punctuation NLTK's word tokeniser splits off as its own token (StyleTTS2's punctuation
# symbols, quotes excluded: they are dropped, as StyleTTS2's own inference does).
_SPLIT_PUNCTUATION = re.compile(r"([;:,.!?¡¿—…«»])")
_QUOTES = re.compile(r"[\"“”]")
_SPACES = re.compile(r"\s+")


def check_espeak() -> None:
    """Raise a TTSError (a RuntimeError) saying how to install espeak-ng when it cannot be used."""
    try:
        from phonemizer.backend import EspeakBackend
    except ImportError as error:
        raise TTSError(f"the Python package `phonemizer` is missing; {INSTALL_HINT}") from error
    if shutil.which("espeak-ng") is None and not EspeakBackend.is_available():
        raise TTSError(f"espeak-ng was not found on this machine; {INSTALL_HINT}")
    if not EspeakBackend.is_available():
        raise TTSError(f"phonemizer cannot load the espeak-ng library; {INSTALL_HINT}")


@functools.lru_cache(maxsize=1)
def _backend():
    """One espeak backend per process (creating it costs ~0.1 s)."""
    check_espeak()
    from phonemizer.backend import EspeakBackend

    quiet = logging.getLogger(f"{__name__}.espeak")  # phonemizer warns on every "…" or dash
    quiet.setLevel(logging.ERROR)
    return EspeakBackend(language=ESPEAK_LANGUAGE, preserve_punctuation=True, with_stress=True, logger=quiet)


def tokenize_like_nltk(phonemes: str) -> str:
    """'həlˈoʊ, wˈɜːld!' -> 'həlˈoʊ , wˈɜːld !' (punctuation as separate words, quotes dropped)."""
    spaced = _SPLIT_PUNCTUATION.sub(r" \1 ", _QUOTES.sub("", phonemes))
    return _SPACES.sub(" ", spaced).strip()


def phonemize_en(text: str) -> str:
    """IPA phonemes of English `text`, tokenised as StyleTTS2 expects ('' for empty text)."""
    if not text.strip():
        return ""
    (phonemes,) = _backend().phonemize([text.strip()], strip=True)
    return tokenize_like_nltk(phonemes)
