"""Stages 1-2 of ES4R as networks (paper, Sec. 3.1-3.2): the backbones, dual-level attention,
the modality adapter, speech-guided cross-modal attention, PLoRA, and `ES4RModel` composing them."""
