"""Organiser commands refuse bad input with one clear line and a nonzero exit, never a traceback."""

import socket
import sqlite3
from pathlib import Path

import pytest

from es4r.cli import main
from es4r.study.demo import write_tone_pairs


def _refused(capsys, argv: list[str], expected: str) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert code not in (0, None)
    assert expected in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


def test_bad_databases_and_counts_are_one_line(tmp_path, capsys):
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("hello")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    for db in (not_sqlite, foreign):
        _refused(capsys, ["study", "export", "--db", str(db), "--out", str(tmp_path / "out")],
                 "is not a study database")
    _refused(capsys, ["study", "serve", "--db", str(tmp_path / "missing.db")], "no study database")
    write_tone_pairs(tmp_path / "pairs", 3, ("a", "b"))
    for count, expected in (("0", "at least 1"), ("-2", "at least 1"), ("9", "lower --samples")):
        _refused(capsys, ["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "a", "b",
                          "--samples", count, "--out", str(tmp_path / f"s{count}.db")], expected)
    for count in ("0", "-1"):  # 0 used to mean all items and -1 all but one, silently
        _refused(capsys, ["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "a", "b", "--samples", "3",
                          "--items-per-annotator", count, "--out", str(tmp_path / f"p{count}.db")],
                 "--items-per-annotator must be at least 1")
    assert main(["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "a", "b", "--samples", "3",
                 "--items-per-annotator", "1", "--out", str(tmp_path / "p1.db")]) == 0  # the smallest allowed


def test_busy_port_names_the_flag(tmp_path, capsys):
    write_tone_pairs(tmp_path / "pairs", 2, ("a", "b"))
    assert main(["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "a", "b", "--samples", "2",
                 "--out", str(tmp_path / "s.db")]) == 0
    capsys.readouterr()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _refused(capsys, ["study", "serve", "--db", str(tmp_path / "s.db"), "--port", str(port)],
                 f"port {port} on 127.0.0.1 is busy")


def test_app_study_mode_on_a_busy_port_names_the_variable_instead_of_moving(tmp_path):
    """`python app.py --study` used to move quietly to the next free port, stranding the pages
    that knew the old one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    write_tone_pairs(tmp_path / "pairs", 2, ("a", "b"))
    assert main(["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "a", "b", "--samples", "2",
                 "--out", str(tmp_path / "s.db")]) == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "app.py", "--study", str(tmp_path / "s.db")], cwd=root,
                              env={**os.environ, "GRADIO_SERVER_PORT": str(port)}, capture_output=True, text=True,
                              timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"port {port} on 127.0.0.1 is busy" in lines[-1] and "GRADIO_SERVER_PORT" in lines[-1]


def test_what_participants_see_names_no_system_and_the_title_is_the_organisers(tmp_path, capsys):
    """Blinding: the page title and heading come from `--title` (default "Listening study"), and
    a title naming a compared system is refused; a system really named `es4r` appears nowhere in
    the app's config (title, heading, every component)."""
    import json

    from es4r.study.ui import build_study_app

    write_tone_pairs(tmp_path / "pairs", 2, ("es4r", "cascade"))
    assert main(["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "es4r", "cascade",
                 "--samples", "2", "--out", str(tmp_path / "s.db")]) == 0
    app = build_study_app(tmp_path / "s.db")
    config = json.dumps(app.get_config_file(), default=str)
    assert "Listening study" in config and "es4r" not in config.lower()
    assert main(["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "es4r", "cascade",
                 "--samples", "2", "--title", "Voices, spring 2027", "--out", str(tmp_path / "t.db")]) == 0
    assert "Voices, spring 2027" in json.dumps(build_study_app(tmp_path / "t.db").get_config_file(), default=str)
    capsys.readouterr()
    _refused(capsys, ["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "es4r", "cascade",
                      "--samples", "2", "--title", "ES4R study", "--out", str(tmp_path / "u.db")], "name neither system")


def _time_wait_on(port: int) -> int:
    """Connections in TIME-WAIT (state 06) on local `port`, from the kernel's table."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "06")


def _leave_time_wait() -> int:
    """A port whose server went away first (as a killed one does), leaving TIME-WAIT sockets."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    listener.close()
    served.close()  # the server side closes first ...
    client.recv(1)
    client.close()  # ... so it is the side left waiting
    return port


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_a_port_left_in_time_wait_by_a_killed_server_is_free_but_a_listening_one_is_not():
    """After `kill -9` the study must restart on its port at once: the busy-port check used to
    refuse for ~60 s because of the dead server's TIME-WAIT sockets (Gradio itself binds fine)."""
    from es4r.study.cli import require_free_port
    from es4r.study.store import StudyError

    port = _leave_time_wait()
    assert _time_wait_on(port) >= 1  # the situation a crash leaves
    with socket.socket() as plain:  # what the old check did: refused
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    require_free_port("127.0.0.1", port)  # no error: the server can bind it now
    with socket.socket() as taken:  # the counterpart: a port something listens on stays busy
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(StudyError, match=f"port {port} on 127.0.0.1 is busy"):
            require_free_port("127.0.0.1", port)


def test_a_play_report_made_while_one_is_on_its_way_is_sent_after_it_not_dropped(tmp_path):
    """The players report through one hidden component's input event. Gradio's default for it,
    "once", drops a report made while the previous one is pending: on a busy server a reply's
    "play" report could take longer than the clip, its "ended" report was dropped, nothing came
    after it and the questions stayed locked. "always_last" sends it (the whole log) afterwards."""
    from es4r.study.ui import build_study_app

    write_tone_pairs(tmp_path / "pairs", 2, ("nova", "orbit"))
    assert main(["study", "create", "--pairs", str(tmp_path / "pairs"), "--systems", "nova", "orbit",
                 "--samples", "2", "--out", str(tmp_path / "s.db")]) == 0
    config = build_study_app(tmp_path / "s.db").get_config_file()
    reporter = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "study-reporter")
    modes = [d["trigger_mode"] for d in config["dependencies"]
             if any(target[0] == reporter for target in d["targets"])]
    assert modes == ["always_last"]
