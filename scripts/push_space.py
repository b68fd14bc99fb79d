"""Publish this checkout to a Hugging Face Space as one new commit of its working tree.

    python -m scripts.push_space you/es4r-studio --dry-run        # what would go, and how
    python -m scripts.push_space you/es4r-studio                  # a CPU Space on the embedded preset
    python -m scripts.push_space you/es4r-gpu --paper              # a GPU Space (pick the hardware in its settings)

Why not `git push`: the Hub refuses any commit holding a file over 10 MiB outside LFS/Xet, and
this repository's history holds several (older checkpoints, two profiling dumps), so pushing the
history is refused even though today's tree is fine. This uploads only the files git tracks now
(nothing under runs/, corpus*/, caches or profiles), minus the tests and CI, which a Space does
not run. The Hub stores the binary files and anything over 10 MiB through LFS/Xet, following the
`.gitattributes` that is uploaded with them. `--paper` sets the Space variables ES4R_PRESET=paper
and ES4R_STYLETTS2 and adds `preload_from_hub` to the uploaded README's front matter, so the
paper preset's backbones are downloaded when the Space is built, not by its first visitor. Needs a token with write access (`hf auth login`
or HF_TOKEN); `--dry-run` needs neither a token nor a network."""

from __future__ import annotations

import argparse
import fnmatch
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEFT_OUT = ("tests/*", ".ci/*")  # tracked, but a Space never runs them
HUB_FILE_LIMIT = 10 * 1024 * 1024  # larger files must go through LFS/Xet

logger = logging.getLogger("push_space")


def tracked_files(root: Path = ROOT) -> list[str]:
    """The files git tracks in `root`, as they are on disk now, without the left-out folders."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"error: {root} is not a git checkout ({error}); clone the repository first") from None
    files = [name for name in listed.decode().split("\0") if name]
    return [f for f in files if (root / f).is_file() and not any(fnmatch.fnmatch(f, p) for p in LEFT_OUT)]


def lfs_patterns(root: Path = ROOT) -> list[str]:
    """The patterns `.gitattributes` routes through LFS."""
    path = root / ".gitattributes"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.split()[0] for line in lines if "filter=lfs" in line and not line.lstrip().startswith("#")]


def through_lfs(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(Path(name).name, p) for p in patterns)


def plan(root: Path = ROOT) -> dict:
    """What an upload holds: files, bytes, which go through LFS, and any large file that would not."""
    files, patterns = tracked_files(root), lfs_patterns(root)
    sizes = {f: (root / f).stat().st_size for f in files}
    lfs = [f for f in files if through_lfs(f, patterns)]
    return {"files": files, "bytes": sum(sizes.values()), "lfs": lfs,
            "too_large_outside_lfs": [f for f in files if sizes[f] > HUB_FILE_LIMIT and f not in lfs]}


def paper_front_matter(readme: str) -> str:
    """The README with `preload_from_hub` listing the paper preset's backbones (es4r/config.py),
    put at the end of its front matter: the Space build downloads them into the hub cache."""
    from es4r.config import preset_config

    backbones = preset_config("paper").backbones
    head, marker, rest = readme.partition("\n---\n")
    if not readme.startswith("---\n") or not marker:
        raise SystemExit("error: README.md has no front matter to add preload_from_hub to")
    repos = [backbones.whisper, backbones.llm, backbones.tts]
    return head + "\npreload_from_hub:\n" + "".join(f"  - {repo}\n" for repo in repos if repo) + "---\n" + rest


def paper_variables() -> dict[str, str]:
    from es4r.config import preset_config

    return {"ES4R_PRESET": "paper", "ES4R_STYLETTS2": preset_config("paper").backbones.tts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", help="the Space's id, owner/name (created as a Gradio Space if it does not exist)")
    parser.add_argument("--variable", action="append", default=[], metavar="KEY=VALUE",
                        help="a Space variable to set (e.g. ES4R_PRESET=paper); repeat for more")
    parser.add_argument("--paper", action="store_true",
                        help="a GPU Space on the paper preset: its variables, and its backbones preloaded at build")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--dry-run", action="store_true", help="only list what would be uploaded")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    variables = dict(v.split("=", 1) for v in args.variable if "=" in v)
    if len(variables) != len(args.variable):
        parser.error("--variable takes KEY=VALUE")
    readme = (ROOT / "README.md").read_text()
    if args.paper:
        variables, readme = {**paper_variables(), **variables}, paper_front_matter(readme)
    upload = plan()
    if upload["too_large_outside_lfs"]:
        raise SystemExit(f"error: over 10 MiB and not routed through LFS by .gitattributes: "
                         f"{upload['too_large_outside_lfs']}; add a pattern for them")
    logger.info("%d files, %.1f MB; %d of them through LFS/Xet (.gitattributes)", len(upload["files"]),
                upload["bytes"] / 1e6, len(upload["lfs"]))
    if args.dry_run:
        print("\n".join(upload["files"]))
        print("\n".join(f"variable {k}={v}" for k, v in variables.items()))
        if args.paper:
            print(readme.partition("\n---\n")[0] + "\n---")
        return 0
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(args.space, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
        for key, value in variables.items():
            api.add_space_variable(args.space, key, value)
        there = set(api.list_repo_files(args.space, repo_type="space"))
        operations = [CommitOperationAdd(name, readme.encode() if name == "README.md" else str(ROOT / name))
                      for name in upload["files"]]
        operations += [CommitOperationDelete(name) for name in sorted(there - set(upload["files"]) - {".gitattributes"})]
        commit = api.create_commit(args.space, operations, repo_type="space",  # the Space mirrors the tree
                                   commit_message="ES4R Studio from its repository")
    except (HfHubHTTPError, OSError) as error:
        raise SystemExit(f"error: the Hub refused or could not be reached: {error}") from None
    logger.info("pushed: %s", commit.commit_url if hasattr(commit, "commit_url") else commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
