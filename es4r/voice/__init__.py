"""Stage 3 of ES4R (paper, Sec. 3.3), the voice: energy -> strategy (strategy.py), inverse-energy
style fusion (style_fusion.py), and the speech synthesis engines behind one small interface
(base.py: StyleTTS2, with Piper and espeak-ng as named fallbacks)."""
