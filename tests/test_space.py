"""What a Hugging Face Space receives (scripts/push_space.py) and what the Hub would accept."""

import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _push_space():
    return importlib.import_module("scripts.push_space")  # as `python -m scripts.push_space` imports it


def _is_binary(path: Path) -> bool:
    return b"\0" in path.read_bytes()[:8000]


def test_the_upload_is_the_tracked_tree_a_space_runs_without_tests_or_local_runs():
    upload = _push_space().plan()
    files = set(upload["files"])
    assert {"app.py", "README.md", "requirements.txt", "packages.txt", ".gitattributes",
            "assets/es4r_embedded/es4r_parts.safetensors", "es4r/pipeline.py"} <= files
    assert not [f for f in files if f.startswith(("tests/", ".ci/", "runs/", "corpus", ".cache/"))]
    assert not [f for f in files if "onnxruntime_profile" in f]


def test_every_binary_or_large_file_goes_through_lfs_and_no_text_file_does():
    """The Hub refuses binary files and files over 10 MiB in plain git: each must match a
    .gitattributes LFS pattern; source and text data stay plain (readable diffs on the Hub)."""
    push_space = _push_space()
    upload = push_space.plan()
    lfs = set(upload["lfs"])
    assert upload["too_large_outside_lfs"] == []
    binary = {f for f in upload["files"] if _is_binary(ROOT / f)}
    assert binary and binary <= lfs, sorted(binary - lfs)
    assert not {f for f in lfs if f.endswith((".py", ".md", ".txt", ".json", ".jsonl", ".yaml"))}


def test_the_plan_flags_a_large_file_no_pattern_routes(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitattributes").write_text("*.wav filter=lfs diff=lfs merge=lfs -text\n")
    (tmp_path / "big.dat").write_bytes(b"x" * (10 * 1024 * 1024 + 1))
    (tmp_path / "clip.wav").write_bytes(b"RIFF\0")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("")
    (tmp_path / "untracked.txt").write_text("")
    subprocess.run(["git", "add", ".gitattributes", "big.dat", "clip.wav", "tests/t.py"], cwd=tmp_path, check=True)
    upload = _push_space().plan(tmp_path)
    assert sorted(upload["files"]) == [".gitattributes", "big.dat", "clip.wav"]
    assert upload["lfs"] == ["clip.wav"] and upload["too_large_outside_lfs"] == ["big.dat"]


def test_this_repository_keeps_its_binary_files_as_plain_blobs_not_lfs_pointers():
    """.gitattributes is for the Space; a clone of this repository (CI's included) has no LFS
    server, so a file committed as an LFS pointer would arrive as three lines of text."""
    push_space = _push_space()
    for name in push_space.plan()["lfs"]:
        head = (ROOT / name).read_bytes()[:64]
        assert not head.startswith(b"version https://git-lfs"), f"{name} is an LFS pointer"


def test_a_paper_space_preloads_exactly_the_paper_backbones_and_a_cpu_space_nothing():
    import yaml

    from es4r.config import preset_config

    push_space = _push_space()
    readme = (ROOT / "README.md").read_text()
    plain = yaml.safe_load(readme.split("---\n")[1])
    assert "preload_from_hub" not in plain  # a CPU Space on the embedded preset downloads nothing
    paper = push_space.paper_front_matter(readme)
    front = yaml.safe_load(paper.split("---\n")[1])
    b = preset_config("paper").backbones
    assert front["preload_from_hub"] == [b.whisper, b.llm, b.tts]
    assert {k: v for k, v in front.items() if k != "preload_from_hub"} == plain
    assert paper.split("\n---\n", 1)[1] == readme.split("\n---\n", 1)[1]  # the page itself unchanged
    assert push_space.paper_variables() == {"ES4R_PRESET": "paper", "ES4R_STYLETTS2": b.tts}
