"""The names of the systems evaluation compares (es4r/systems.py builds them), importable without
torch: the command line lists them in `--help`."""

SYSTEMS = {
    "es4r": "ES4R: speech path (needs a trained ES4R checkpoint)",
    "es4r_text": "ES4R text path: transcripts instead of speech, empathetic TTS kept",
    "no_dual": "ES4R without dual-level attention",
    "no_cross": "ES4R without cross-modal attention",
    "no_note": "ES4R without the affect note (the speech path hears the words only)",
    "no_empathetic_tts": "ES4R without empathetic TTS (neutral parameters, no style fusion)",
    "cascade": "cascade baseline: Whisper ASR -> LLM (plain chat) -> TTS (neutral), no ES4R parts",
}
SPEECH_SYSTEMS = ("es4r", "no_dual", "no_cross", "no_note", "no_empathetic_tts")
