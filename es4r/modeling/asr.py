"""Speech to text with the Whisper backbone: what the pipeline's ASR stage runs.

The transcript is Whisper's greedy decode of the recording (padded to Whisper's 30 s window).
For an English-only Whisper (the embedded tiny.en) the decoder prompt is fixed —
<|startoftranscript|><|notimestamps|> — so the greedy decode is a short loop here: the encoder
once, then one decoder step per token over a key/value cache, with the two token bans Whisper's
generation config asks for (`suppress_tokens` always, `begin_suppress_tokens` at the first
token). It gives the same tokens as transformers' `WhisperForConditionalGeneration.generate`
(tests/test_asr.py checks the bundled clips) in less time: measured on a 2-core CPU, 0.49-0.56 s
against 0.55-0.78 s per 3-5 s turn, the difference being generate's per-token bookkeeping. A
multilingual Whisper (the paper preset's large-v3) first detects the language, which
`generate` does; it keeps `generate`.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_TOKENS = 128  # one 30 s turn of speech is well under this


@torch.no_grad()
def transcribe(whisper, samples: np.ndarray, sample_rate: int) -> str:
    """The text of `samples` (mono float32 at `sample_rate`, which must be Whisper's 16 kHz)."""
    model = whisper.model
    weight = next(model.parameters())
    features = whisper.processor.feature_extractor(samples, sampling_rate=sample_rate, return_tensors="pt").input_features
    features = features.to(weight.device, weight.dtype)
    limit = min(MAX_TOKENS, model.config.max_target_positions // 2)
    if fixed_prompt(model) is None:
        ids = model.generate(features, max_new_tokens=limit)[0].tolist()
    else:
        ids = greedy_tokens(model, features, limit, whisper.runtime)
    return whisper.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()


def fixed_prompt(model) -> list[int] | None:
    """The decoder prompt of an English-only Whisper, or None when it is not fixed (a
    multilingual model, which detects the language first)."""
    config = model.generation_config
    start, no_timestamps = model.config.decoder_start_token_id, getattr(config, "no_timestamps_token_id", None)
    if getattr(config, "is_multilingual", True) or start is None or no_timestamps is None:
        return None
    return [int(start), int(no_timestamps)]


def greedy_tokens(model, features: torch.Tensor, limit: int, runtime=None) -> list[int]:
    """Greedy decode of one recording's features (1, n_mels, frames) with the fixed prompt;
    returns the tokens, prompt and end-of-text excluded. `runtime`: a WhisperRuntime
    (es4r/modeling/whisper_onnx.py) that runs the encoder and the decode steps in ONNX Runtime."""
    from transformers import DynamicCache, EncoderDecoderCache

    config = model.generation_config
    prompt = fixed_prompt(model)
    if runtime is not None:
        return runtime.tokens(runtime.encode(features), prompt, limit, np.array(list(config.suppress_tokens or []), np.int64),
                            np.array(list(config.begin_suppress_tokens or []), np.int64), int(config.eos_token_id))
    encoded = model.get_encoder()(features).last_hidden_state
    decoder = model.get_decoder()
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    banned = torch.as_tensor(list(config.suppress_tokens or []), dtype=torch.long, device=features.device)
    banned_first = torch.as_tensor(list(config.begin_suppress_tokens or []), dtype=torch.long, device=features.device)
    end = int(config.eos_token_id)
    step_ids = torch.as_tensor([prompt], device=features.device)
    tokens: list[int] = []
    for step in range(limit):
        hidden = decoder(input_ids=step_ids, encoder_hidden_states=encoded, past_key_values=cache,
                         use_cache=True).last_hidden_state
        logits = model.proj_out(hidden[:, -1]).float()
        logits[:, banned] = -float("inf")
        if step == 0:
            logits[:, banned_first] = -float("inf")
        token = int(logits.argmax(-1))
        if token == end:
            break
        tokens.append(token)
        step_ids = step_ids.new_tensor([[token]])
    return tokens
