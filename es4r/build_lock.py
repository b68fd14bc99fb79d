"""One lock for building transformers models in this process.

`from_pretrained` builds a model under process-wide patches: it swaps
`PreTrainedModel.tie_weights` for a no-op on the class and puts back what it saved, and it sets
torch's default dtype. Two threads loading at once (the app's turn and early-ASR threads, a
server beside a test) can put back each other's no-op, which then stays: every later load leaves
the tied weights (Whisper's `proj_out`, a tied LM head) on the meta device. So every model this
package loads or builds holds `BUILD_LOCK` (tests/test_backbones.py)."""

import threading

BUILD_LOCK = threading.RLock()  # re-entrant: a build that loads another inside it does not wait on itself
