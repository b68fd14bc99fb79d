"""Data: training manifests (manifest.py), the spoken corpus builder (corpus.py), the
affect-aware teacher whose replies are its training targets (teacher.py, written into a
manifest by teacher_targets.py), the fixed test sets (test_sets.py) and their committed clips
(spoken_sets.py); cli.py makes them `python -m es4r` commands."""
