"""Files the page is handed — each turn's export archive, each spoken sentence — in a folder
of the process's own per kind: older ones are removed as new ones come (Gradio serves its own
copy of each, so ours is needed only until it is sent), and the folder goes at exit."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path


class ServedFolder:
    def __init__(self, prefix: str, keep_s: float):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self.keep_s = keep_s
        atexit.register(shutil.rmtree, self.path, True)

    def _prune(self) -> None:
        now = time.time()
        for old in self.path.iterdir():
            if now - old.stat().st_mtime > self.keep_s:
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)

    def new_file(self, prefix: str, suffix: str) -> Path:
        """A fresh, empty file named `prefix…suffix`."""
        self._prune()
        handle, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=self.path)
        os.close(handle)
        return Path(path)

    def new_path(self, name: str) -> Path:
        """A path named exactly `name` (what a download is called), in a fresh subfolder."""
        self._prune()
        return Path(tempfile.mkdtemp(dir=self.path)) / name
