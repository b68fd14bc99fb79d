"""Build and start this repository the way a Hugging Face Gradio Space does, then speak one turn to it.

    python -m scripts.space_check --workdir /tmp/space            # ~15-20 min the first time
    python -m scripts.space_check --workdir /tmp/space --fresh-home  # again, reusing the built venv

The steps a Space takes, and nothing more: the Debian packages of `packages.txt`; a new virtual
environment with `pip install -r requirements.txt` alone (no setup script, no --no-deps list);
the files scripts/push_space.py uploads, as the app folder; `python app.py` as a non-root user
with an empty HOME, no ES4R_* variables and GRADIO_SERVER_NAME=0.0.0.0. Then: the page answers
HTTP 200, and one spoken turn (assets/examples/rough_week_1.wav) is sent through `gradio_client`
as a visitor's browser sends it (take the recording, then converse) and must come back with a
reply, on the speech path. Prints each step's time and a JSON summary; exit 0 only if all passed.
Needs root (apt, and a user to run the app as) or a non-root account that already has the packages."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER = "es4rspace"
CLIP = "assets/examples/rough_week_1.wav"
logger = logging.getLogger("space_check")

CLIENT = r"""
import json, sys, time
from gradio_client import Client, handle_file
client = Client(sys.argv[1], verbose=False)
endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
missing = [e for e in ("/load_page", "/take_turn", "/converse") if e not in endpoints]
if missing:
    sys.exit(f"the app's API lacks {missing}; it has {sorted(endpoints)}")
status = client.predict(api_name="/load_page")[0]
started = time.perf_counter()
client.predict(handle_file(sys.argv[2]), api_name="/take_turn")
chat = None
for output in client.submit(api_name="/converse"):
    if output and isinstance(output[0], list) and output[0]:
        chat = output[0]
seconds = time.perf_counter() - started
replies = [m["content"] for m in chat or [] if m.get("role") == "assistant"]
def text(content):  # a message's content: a string, or parts with "text"
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts).strip()
print(json.dumps({"status": status, "turn_s": round(seconds, 2), "user": [text(m["content"]) for m in chat or []
                  if m.get("role") == "user"], "reply": text(replies[-1]) if replies else ""}))
"""


def run(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    logger.info("$ %s", " ".join(command))
    subprocess.run(command, check=True, **kwargs)
    return round(time.perf_counter() - started, 1)


def space_files(app: Path) -> None:
    """The files a Space receives (scripts/push_space.py's upload), copied to `app`."""
    from scripts.push_space import plan

    for name in plan()["files"]:
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, app / name)


def app_user(home: Path) -> tuple[int, int]:
    """A non-root account to run the app as (created once), owning the empty HOME."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
        entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


def wait_for_page(url: str, process: subprocess.Popen, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return round(time.perf_counter() - started, 1)
        except OSError:
            pass
        time.sleep(2)
    raise RuntimeError(f"no HTTP 200 from {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="where the venv, app folder and HOME go")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--fresh-home", action="store_true", help="empty HOME again (a cold start) but keep the venv")
    parser.add_argument("--start-timeout", type=float, default=1200)
    parser.add_argument("--build-only", action="store_true", help="stop once the venv is built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    times, work = {}, args.workdir.resolve()
    venv, app, home, log = work / "venv", work / "app", work / "home", work / "app.log"
    tmp = work / "tmp"  # a Space starts with an empty /tmp; this machine's may hold root's /tmp/gradio
    python = venv / "bin" / "python"
    times["apt_s"] = run(["bash", str(ROOT / "scripts" / "install_apt.sh")])  # packages.txt only
    if not (work / "venv.done").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        times["venv_s"] = run([sys.executable, "-m", "venv", str(venv)])
        times["pip_install_s"] = run([str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements.txt")])
        (work / "venv.done").write_text(json.dumps(times))
    else:
        times.update({k: v for k, v in json.loads((work / "venv.done").read_text()).items() if k != "apt_s"})
        logger.info("reusing the built venv (%s)", venv)
    if args.build_only:
        print(json.dumps({"times": times}, indent=2))
        return 0
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir(parents=True)
    space_files(app)
    if args.fresh_home or not home.is_dir():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    env = {"HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(args.port), "PYTHONUNBUFFERED": "1",
           "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    preexec = None
    if os.geteuid() == 0:
        uid, gid = app_user(home)
        for path in (app, home, tmp):
            subprocess.run(["chown", "-R", f"{uid}:{gid}", str(path)], check=True)
        def preexec():  # noqa: E306 - drop root before the app starts, as a Space runs it
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        probe = subprocess.run([str(python), "-c", "pass"], preexec_fn=preexec, capture_output=True, text=True)
        if probe.returncode != 0:
            raise SystemExit(f"error: {USER} cannot run {python} ({probe.stderr.strip()[-200:]}); the venv's base "
                             f"interpreter must be reachable by other users (e.g. `chmod o+x` its parent folders)")
    summary = {"times": times, "passed": False}
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen([str(python), "app.py"], cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=preexec, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{args.port}/"
        times["start_to_http_200_s"] = wait_for_page(url, process, args.start_timeout)
        turn = subprocess.run([str(python), "-c", CLIENT, url, str(app / CLIP)], capture_output=True, text=True,
                              timeout=600, env=dict(env, HOME=str(work)))
        if turn.returncode != 0:
            raise RuntimeError(f"the spoken turn failed: {turn.stderr.strip().splitlines()[-1:]}")
        result = json.loads(turn.stdout.strip().splitlines()[-1])
        times["turn_s"] = result.pop("turn_s")
        summary.update(result)
        speech = "answered by the speech model" in result["status"]
        summary["passed"] = bool(result["reply"].strip()) and speech
        if not speech:
            summary["problem"] = "the page does not say the speech model answers"
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        summary["problem"] = str(error)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    times["whole_run_s"] = round(time.perf_counter() - started, 1)
    tail = log.read_text().splitlines()[-15:]
    summary["app_log_tail"] = tail if not summary["passed"] else tail[-3:]
    print(json.dumps(summary, indent=2))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
