"""Speech synthesis engines behind one small interface (see base.py)."""
