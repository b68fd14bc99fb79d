"""One-off measurements, kept with their results' write-ups: see experiments/README.md. Each
runs from the repository root as `python -m experiments.<name>` (so `es4r` imports from the
checkout) and is no part of the package or the shipped recipe."""
