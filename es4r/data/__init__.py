"""Data: training manifests (manifest.py), the spoken corpus builder (corpus.py) and the
affect-aware teacher whose replies are its training targets (teacher.py)."""
