"""The voice's error type, beneath every voice module (the text front end raises it too)."""


class TTSError(RuntimeError):
    """Synthesis failed in a way the caller should report to the user."""
