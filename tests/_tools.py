"""What several tests do with other programs: run a checker (promtool, amtool, a schema validator) and require it
to pass, read an HTTP endpoint of a stage, and stop the stages a test started."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence


def passes(argv: Sequence[str], timeout_s: float = 120) -> str:
    """Run a checker; it must exit 0. Its output is printed (pytest shows it on failure) and returned."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, f"{argv[0]} exited {done.returncode}"
    return done.stdout + done.stderr


def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    """Status and body of ``GET http://host:port/path``; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def stop_all(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 30) -> None:
    """SIGTERM every process still running, then wait for each (killing one that outstays ``timeout_s``)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
