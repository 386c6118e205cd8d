"""Progress bars on long commands (issue 10, item 9): shown on a terminal, silent in a pipe."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEARLINE = str(Path(sys.executable).with_name("wearline"))
SIMULATE = ["simulate", "--mode", "offline", "--scenario", str(ROOT / "deploy/scenarios/offline_pumps.toml")]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")} | {"COLUMNS": "100"}


def test_offline_simulation_shows_a_bar_on_a_terminal(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [WEARLINE, *SIMULATE, "--units", "6", "--seed", "3", "--out", str(tmp_path / "sim")],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=_env(),
        close_fds=True,
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert proc.wait(timeout=30) == 0, seen[-2000:]
    text = seen.decode(errors="replace")
    assert "simulating" in text, text[-2000:]
    assert "━" in text, "rich's bar was drawn"
    assert "wrote 6 train units" in text


def test_offline_simulation_in_a_pipe_prints_only_its_summary(tmp_path: Path) -> None:
    done = subprocess.run(
        [WEARLINE, *SIMULATE, "--units", "6", "--seed", "3", "--out", str(tmp_path / "sim")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "━" not in done.stdout + done.stderr
    assert "\x1b[" not in done.stdout + done.stderr, "no terminal control codes in a pipe"
    assert done.stdout.startswith("wrote 6 train units")
