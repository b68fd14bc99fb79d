"""Stage 2: speech-guided cross-modal attention (paper, Sec. 3.2).

S' = Attention(query = S, key = value = E_text): the speech sequence S decides which of
the history's own word embeddings E_text make up S'. As in the authors' code there is no
residual to S, so S' is built from the history's words and the LLM can read it from the
first training step. Three choices make the untrained block already useful:

* a **turn-block mask**: the speech of turn i attends only to the tokens of turn i. A turn's
  tokens include its role label ("User: " / "You: ") and its closing newline, so the first
  speech positions of a turn read the label and the last ones the line break;
* a **monotonic position prior** inside the turn: speech position at relative time u reads
  the token at relative position u, as a Gaussian bias -(k - u·m)^2 / (2σ^2) on the
  logits (m tokens in the turn), σ = 0.5 token at initialisation and learnable per head;
* **identity value and output projections** and a zero query projection, so at step 0
  S' is the history's embeddings read in order (measured: the untrained speech path then
  answers the content like the text path; a blurred prior, σ = 1.5, gives gibberish).

Speech enters S' in two ways that training can open: the content term q(S)·k(E) of the
logits (zero at initialisation), and an additive speech term tanh(g) ⊙ W_s S whose gate g
starts closed (0) — the channel for how something was said (energy, pace). With
`config.prosody`, each turn's measured loudness and rate (es4r/modeling/prosody.py) are added too,
through a projection whose rows start at the scale of a word embedding and a gate of their own
that starts closed. With `config.prosody_cue`, the last heard turn's loudness and rate are also
projected onto the reply cue (the tokens that close the user's message and open the reply, where
the training teacher reads its hint of how the user sounds): a projection that starts at zero.
Measured on the CPU corpus: spread over S' the prosody barely steers the reply (its gate stayed
~0.03 over a full run); at the cue, 20 steps of training make the speech path prefer the reply
that matches how the dialogue was spoken (assets/TRAINING_CPU.md, "The reply cue and affect pairs"). With
`config.affect_note`, the block also holds the affect reader (es4r/modeling/affect_reader.py):
it hears the trend of the user's loudness and rate and the LLM gets it as a note in words."""

from __future__ import annotations

import math

import torch
from torch import nn

from es4r.config import CrossModalConfig
from es4r.modeling.affect_reader import AffectReader
from es4r.modeling.prosody import PROSODY_FEATURES

NO_TURN = -1  # turn id of padding (speech or text positions that belong to no turn)


def turn_ranks(turn_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each position of (B, L) turn ids: its rank inside its turn and that turn's size.
    Positions of one turn must be contiguous (they are: turns are laid out in order)."""
    rank = torch.zeros_like(turn_ids, dtype=torch.float32)
    size = torch.ones_like(turn_ids, dtype=torch.float32)
    for b in range(turn_ids.shape[0]):
        for turn in turn_ids[b].unique().tolist():
            if turn == NO_TURN:
                continue
            where = (turn_ids[b] == turn).nonzero().flatten()
            rank[b, where] = torch.arange(len(where), dtype=torch.float32, device=turn_ids.device)
            size[b, where] = float(len(where))
    return rank, size


class CrossModalAttention(nn.Module):
    def __init__(self, width: int, config: CrossModalConfig, embedding_rms: float = 1.0):
        super().__init__()
        if width % config.heads:
            raise ValueError(f"LLM width {width} is not divisible by {config.heads} cross-modal heads")
        self.config = config
        self.heads, self.head_width = config.heads, width // config.heads
        self.query_norm = nn.LayerNorm(width)
        self.key_norm = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.output = nn.Linear(width, width)
        self.speech = nn.Linear(width, width)  # the additive speech term, behind the gate
        self.gate = nn.Parameter(torch.zeros(width))  # tanh(0) = 0: closed at initialisation
        if config.prosody:  # how each turn was spoken (es4r/modeling/prosody.py), behind its own closed gate
            self.prosody = nn.Linear(len(PROSODY_FEATURES), width, bias=False)
            self.prosody_gate = nn.Parameter(torch.zeros(width))
            nn.init.normal_(self.prosody.weight, std=embedding_rms)
        if config.prosody and config.prosody_cue:  # zero at start: the untrained reply cue is unchanged
            self.cue = nn.Linear(len(PROSODY_FEATURES), width, bias=False)
            nn.init.zeros_(self.cue.weight)
        if config.affect_note:  # hears the user's trend, tells the LLM in words (es4r/modeling/affect_reader.py)
            self.reader = AffectReader(config.prosody_level_scale, config.prosody_rate_scale)
        self.log_sigma = nn.Parameter(torch.full((config.heads,), math.log(config.prior_sigma)))
        self.dropout = nn.Dropout(config.dropout)
        for layer in (self.value, self.output):
            nn.init.eye_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.query.weight)
        nn.init.zeros_(self.query.bias)

    def reply_cue(self, turn_prosody: torch.Tensor | None) -> torch.Tensor | None:
        """(W,) added to each embedding of the reply cue: the projected loudness and rate of the
        last heard turn, centred over the dialogue — how the person sounds now against how they
        sounded before (falling: both negative; rising: positive; flat: about zero)."""
        if turn_prosody is None or not hasattr(self, "cue") or not self.config.enabled:
            return None
        return self.cue(turn_prosody[-1].to(self.cue.weight.dtype))

    def position_prior(self, speech_turn: torch.Tensor, text_turn: torch.Tensor) -> torch.Tensor:
        """(B, heads, S, T) additive logit bias: the turn-block mask (-inf across turns) plus
        the Gaussian monotonic prior inside each turn."""
        speech_rank, speech_size = turn_ranks(speech_turn)
        text_rank, text_size = turn_ranks(text_turn)
        relative = (speech_rank + 0.5) / speech_size  # (B, S) in (0, 1)
        expected = relative[:, :, None] * text_size[:, None, :] - 0.5  # (B, S, T) token rank at that time
        distance = text_rank[:, None, :] - expected
        sigma = self.log_sigma.exp()[None, :, None, None]
        prior = -distance[:, None] ** 2 / (2 * sigma**2)
        same_turn = (speech_turn[:, :, None] == text_turn[:, None, :]) & (speech_turn[:, :, None] != NO_TURN)
        return prior.masked_fill(~same_turn[:, None], float("-inf"))

    def forward(
        self,
        speech: torch.Tensor,
        text_embeddings: torch.Tensor,
        speech_turn: torch.Tensor,
        text_turn: torch.Tensor,
        prosody: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """speech (B, S, W), text_embeddings (B, T, W); speech_turn (B, S) and text_turn (B, T)
        hold each position's turn index (NO_TURN = padding). Returns S' (B, S, W) and the
        weights (B, S, T) averaged over heads; a speech position's row sums to 1 over its turn's
        tokens (0 when its turn has no tokens). `prosody` (B, S, 2), when given, is each speech
        position's turn loudness and rate (es4r/modeling/prosody.py), added through its gate."""
        batch, length, width = speech.shape
        if not self.config.enabled:  # ablation "without cross-modal attention": S goes in as it is
            return speech, speech.new_zeros(batch, length, text_embeddings.shape[1])
        split = lambda x: x.view(batch, x.shape[1], self.heads, self.head_width).transpose(1, 2)  # noqa: E731
        query = split(self.query(self.query_norm(speech)))
        key = split(self.key(self.key_norm(text_embeddings)))
        value = split(self.value(text_embeddings))
        logits = query @ key.transpose(-1, -2) / math.sqrt(self.head_width)
        logits = logits + self.position_prior(speech_turn, text_turn).to(logits.dtype)
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # rows with no tokens: all -inf -> 0
        attended = (weights @ value).transpose(1, 2).reshape(batch, length, width)
        out = self.output(attended) + torch.tanh(self.gate) * self.dropout(self.speech(speech))
        if prosody is not None and self.config.prosody:
            out = out + torch.tanh(self.prosody_gate) * self.prosody(prosody.to(out.dtype))
        return out, weights.mean(1)
