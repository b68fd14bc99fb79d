"""Running `python -m es4r` in-process for the command tests: exit code and output, and the
one-line refusal every command gives bad input."""

from __future__ import annotations

from es4r.cli import main


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m es4r *argv`."""
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own refusals
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, argv: list[str], expected: str) -> None:
    """Exit 2 with one line on stderr that says `expected`, never a traceback."""
    code, _, err = run_cli(capsys, argv)
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
