"""ES4R: speech-based empathetic response generation (arXiv 2601.16225)."""

__version__ = "0.1.0"
