"""Training ES4R (paper, Sec. 3.2): the two-path CE + KL loop (trainer.py), checkpoints of the
ES4R parts (checkpoint.py) and the affect-pair stage (affect_pairs.py)."""
