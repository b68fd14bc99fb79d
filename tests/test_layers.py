"""Every import inside es4r/ points down its layers, and no two modules import each other
(issue: layers that only point down). A layer may import itself and anything below it."""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Bottom to top. A module belongs to the longest prefix listed.
LAYERS = (
    ("es4r.config", "es4r.startup_errors", "es4r.timing", "es4r.sentence_encoder", "es4r.system_names",
     "es4r.build_lock"),
    ("es4r.conversation", "es4r.turn_events", "es4r.audio", "es4r.vad", "es4r.turn_detector", "es4r.hands_free",
     "es4r.reply_text", "es4r.embedded"),
    ("es4r.modeling", "es4r.voice"),
    ("es4r.data",),
    ("es4r.training",),
    ("es4r.presets", "es4r.pipeline", "es4r.systems"),
    ("es4r.evaluation", "es4r.bench", "es4r.user_cascade", "es4r.ui", "es4r.study"),
    ("es4r.cli", "es4r.__main__", "es4r.training.cli", "es4r.evaluation.cli", "es4r.study.cli", "es4r.data.cli"),
)


def layer_of(module: str) -> int | None:
    best = (-1, None)
    for index, group in enumerate(LAYERS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), index)
    return best[1]


def imports() -> dict[str, set[str]]:
    """module -> es4r modules it imports anywhere in its code (function-level imports too)."""
    found = defaultdict(set)
    for path in ROOT.joinpath("es4r").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("es4r"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("es4r")]
            else:
                continue
            known = [t for t in targets if ROOT.joinpath(*t.split(".")).with_suffix(".py").is_file()
                     or ROOT.joinpath(*t.split("."), "__init__.py").is_file()]
            found[module] |= {max(known, key=len)} if known else set()
    return found


def test_every_module_has_a_layer():
    assert not [m for m in imports() if layer_of(m) is None]


def test_imports_only_point_down():
    upward = sorted((m, t, layer_of(m), layer_of(t)) for m, targets in imports().items() for t in targets
                    if layer_of(t) is not None and layer_of(t) > layer_of(m))
    assert not upward, f"(module, imports, its layer, their layer): {upward}"


def test_no_two_modules_import_each_other():
    graph = imports()
    pairs = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                    if a != b and a in graph.get(b, set())})
    assert not pairs, pairs


def test_the_rules_would_catch_an_upward_import(tmp_path):
    """The counterpart: the checker itself sees an upward import and a loop when they exist."""
    assert layer_of("es4r.modeling.openings") < layer_of("es4r.evaluation.metrics")
    assert layer_of("es4r.training.trainer") < layer_of("es4r.presets") < layer_of("es4r.training.cli")
    graph = imports()
    assert "es4r.sentence_encoder" in graph["es4r.modeling.openings"]
    assert "es4r.voice.errors" in graph["es4r.voice.text_normalize"]
