"""Reply text -> speakable text: markdown and emoji removed, numbers written as words,
whitespace collapsed; and speakable text -> sentences short enough for one synthesis pass.

LLM replies arrive with markdown and emoji, which phonemisers read out or choke on; the
voice models were trained on plain read prose."""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
HUNDRED = 100
TEEN_LIMIT = 20  # below this a number has its own word
DECIMAL_BASE = 10
CENTS_PER_DOLLAR = 100
MAX_SPOKEN_NUMBER = 10**15  # larger numbers are read digit by digit
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}

# Sentence splitting: a sentence ends at . ! ? … followed by space; pieces longer than
# MAX_SENTENCE_CHARS are cut at clause punctuation, then at spaces, so that the phonemes
# of one piece stay well inside PL-BERT's 512 positions (about 1.3 phonemes per character).
MAX_SENTENCE_CHARS = 300
MIN_SENTENCE_WORDS = 3  # shorter fragments ("Oh.") are joined to a neighbour; a first clause needs as many

_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff"
    "\U00002b00-\U00002bff\U0000fe00-\U0000fe0f\U0000200d\U000020e3\U000e0020-\U000e007f]+"
)
_CODE_BLOCK = re.compile(r"```.*?```", re.DOTALL)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+|www\.\S+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_QUOTE_MARK = re.compile(r"^\s{0,3}>\s?", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1")
_LEFTOVER_MARKUP = re.compile(r"[*_`#~|<>\[\]{}^]")
_CURRENCY = re.compile(r"\$(\d[\d,]*)(?:\.(\d{1,2}))?\b")
_PERCENT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_DECIMAL = re.compile(r"(?<![\d.])(-?)(\d[\d,]*)\.(\d+)\b")
_INTEGER = re.compile(r"(?<![\d.])(-?)(\d{1,3}(?:,\d{3})+|\d+)\b")
_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at "}
_LINE_END_MARKS = ".!?…,;:"  # a line ending in one of these needs no added full stop
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
CLAUSE_MARKS = ",;:—"
_CLAUSE_END = re.compile(rf"(?<=[{CLAUSE_MARKS}])\s+")


def _below_thousand(number: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(number, HUNDRED)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= TEEN_LIMIT:
        tens, ones = divmod(rest, DECIMAL_BASE)
        words.append(_TENS[tens] + (f"-{_ONES[ones]}" if ones else ""))
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def number_to_words(number: int) -> str:
    """12345 -> 'twelve thousand three hundred forty-five'; negative numbers say 'minus'."""
    if number < 0:
        return "minus " + number_to_words(-number)
    if number >= MAX_SPOKEN_NUMBER:
        return " ".join(_ONES[int(digit)] for digit in str(number))
    words: list[str] = []
    for scale, name in _SCALES:
        count, number = divmod(number, scale)
        if count:
            words += _below_thousand(count) + [name]
    if number or not words:
        words += _below_thousand(number)
    return " ".join(words)


def ordinal_to_words(number: int) -> str:
    """21 -> 'twenty-first'."""
    cardinal = number_to_words(number)
    head, sep, last = cardinal.rpartition(" ")
    prefix, dash, unit = last.rpartition("-")
    if unit in _ORDINAL_IRREGULAR:
        unit = _ORDINAL_IRREGULAR[unit]
    elif unit.endswith("y"):
        unit = unit[:-1] + "ieth"
    else:
        unit += "th"
    return head + sep + prefix + dash + unit


def _digits_to_words(digits: str) -> str:
    return " ".join(_ONES[int(digit)] for digit in digits)


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _say_currency(match: re.Match) -> str:
    dollars = _int(match.group(1))
    cents = int(match.group(2).ljust(2, "0")) if match.group(2) else 0
    spoken = f"{number_to_words(dollars)} dollar{'' if dollars == 1 else 's'}"
    if cents:
        spoken += f" and {number_to_words(cents)} cent{'' if cents == 1 else 's'}"
    return spoken


def _say_decimal(match: re.Match) -> str:
    sign = "minus " if match.group(1) else ""
    return f"{sign}{number_to_words(_int(match.group(2)))} point {_digits_to_words(match.group(3))}"


def _say_numbers(text: str) -> str:
    text = _CURRENCY.sub(_say_currency, text)
    text = _PERCENT.sub(lambda m: f"{m.group(1)} percent", text)
    text = _ORDINAL.sub(lambda m: ordinal_to_words(int(m.group(1))), text)
    text = _DECIMAL.sub(_say_decimal, text)
    return _INTEGER.sub(lambda m: number_to_words(_int(m.group(2)) * (-1 if m.group(1) else 1)), text)


def _strip_markdown(text: str) -> str:
    text = _CODE_BLOCK.sub(" ", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _QUOTE_MARK.sub("", text)
    text = _BULLET.sub("", text)
    previous = None
    while previous != text:  # nested emphasis (**_word_**) unwraps one layer per pass
        previous, text = text, _EMPHASIS.sub(r"\2", text)
    return _LEFTOVER_MARKUP.sub(" ", _end_lines(text))


def _end_lines(text: str) -> str:
    """A blank line, or a line break before a capitalised line (heading, list item), ends a
    sentence: such unpunctuated lines get a full stop; a soft wrap is just a space."""
    ended = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        ended += [
            line if line[-1] in _LINE_END_MARKS or following[:1].islower() else f"{line}."
            for line, following in zip(lines, lines[1:] + ["End"])
        ]
    return " ".join(ended)


def normalize_for_tts(text: str) -> str:
    """Plain speakable text: markdown and emoji stripped, numbers as words, one space between
    words. Returns '' when nothing speakable is left."""
    text = _EMOJI.sub(" ", _strip_markdown(text))
    text = _say_numbers(text)
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.!?;:…])", r"\1", text)  # no space before punctuation
    return "" if not re.search(r"\w", text) else text


def _cut(piece: str, max_chars: int) -> list[str]:
    """Cut one over-long sentence at clause punctuation, else at spaces."""
    if len(piece) <= max_chars:
        return [piece]
    for pattern in (_CLAUSE_END, re.compile(r"\s+")):
        parts, current = [], ""
        for part in pattern.split(piece):
            if current and len(current) + 1 + len(part) > max_chars:
                parts.append(current)
                current = part
            else:
                current = f"{current} {part}".strip()
        parts.append(current)
        if all(len(part) <= max_chars for part in parts):
            return parts
        piece = " ".join(parts)
    return [piece[i : i + max_chars] for i in range(0, len(piece), max_chars)]


def _sentences(text: str) -> list[str]:
    """Normalised `text` cut at its sentence ends, as written (nothing joined or cut)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def first_clause(sentence: str) -> tuple[str, str] | None:
    """(head, rest) when a reply's first `sentence` is spoken as two units, so that the voice
    can start before the sentence is written: split at the first clause mark (, ; : —) with at
    least MIN_SENTENCE_WORDS words before it, when at least as many follow it. Only that first
    mark is considered, so the answer for a sentence still being written never changes once it
    says yes (the rest only grows)."""
    for mark in _CLAUSE_END.finditer(sentence):
        head, rest = sentence[: mark.start()], sentence[mark.end():]
        if len(head.split()) >= MIN_SENTENCE_WORDS:
            return (head, rest) if len(rest.split()) >= MIN_SENTENCE_WORDS else None
    return None


def settled_first_clause(text: str) -> str | None:
    """The first speaking unit of normalised `text`, the start of a reply whose first sentence
    is still being written, when `split_sentences` of any continuation starts with it: the
    first sentence's first clause, once `first_clause` has said yes."""
    sentences = _sentences(text)
    clause = first_clause(sentences[0]) if len(sentences) == 1 else None
    return clause[0] if clause and len(clause[0]) <= MAX_SENTENCE_CHARS else None


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences of normalised text, each at most `max_chars`; fragments of fewer than
    MIN_SENTENCE_WORDS words are joined to a neighbour (very short inputs synthesise badly).
    The first sentence is cut at its first clause (`first_clause`): a reply's voice starts
    sooner, and a comma is a place where a speaker pauses anyway."""
    sentences = _sentences(text)
    if sentences and (clause := first_clause(sentences[0])):
        sentences[:1] = clause
    merged: list[str] = []
    for sentence in sentences:
        previous_short = merged and len(merged[-1].split()) < MIN_SENTENCE_WORDS
        if merged and (previous_short or len(sentence.split()) < MIN_SENTENCE_WORDS):
            if len(merged[-1]) + 1 + len(sentence) <= max_chars:
                merged[-1] = f"{merged[-1]} {sentence}"
                continue
        merged.append(sentence)
    return [part for sentence in merged for part in _cut(sentence, max_chars)]


def speakable(text: str) -> str:
    """normalize_for_tts, or TTSError when nothing speakable is left (emoji, markup only)."""
    from es4r.voice.errors import TTSError

    spoken = normalize_for_tts(text)
    if not spoken:
        raise TTSError(f"nothing speakable in {text[:60]!r}; expected words after removing markup and emoji")
    return spoken
