"""``./scripts/demo`` installs only when needed: no venv yet, or pyproject.toml changed.

Runs the real script in a scratch copy whose ``.venv`` holds stand-ins: ``python`` logs
its arguments instead of running pip, ``bgconsole`` logs that the demo started.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _scratch(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "demo", root / "scripts" / "demo")
    (root / "pyproject.toml").write_text('[project]\nname = "bgconsole"\n')
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = root / "calls.log"
    for name in ("python", "bgconsole"):
        stand_in = bin_dir / name
        stand_in.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        stand_in.chmod(0o755)
    return root


def _run(root: Path) -> list[str]:
    log = root / "calls.log"
    log.unlink(missing_ok=True)
    subprocess.run([root / "scripts" / "demo", "--no-console"], check=True, capture_output=True)
    # pip and the demo; the install's other steps (byte-compiling) are not the point here.
    return [c for c in log.read_text().splitlines() if c.startswith(("python -m pip", "bgconsole"))]


def test_installs_once_then_again_only_when_pyproject_changes(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    install = "python -m pip install -q --no-compile -e .[demo]"
    assert _run(root) == [install, "bgconsole demo --no-console"]
    assert _run(root) == ["bgconsole demo --no-console"]  # warm: no pip at all

    with (root / "pyproject.toml").open("a") as f:
        f.write('dependencies = ["textual"]\n')
    assert _run(root) == [install, "bgconsole demo --no-console"]
    assert _run(root) == ["bgconsole demo --no-console"]


def test_a_failed_install_is_retried_next_time(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    python = root / ".venv" / "bin" / "python"
    python.write_text("#!/bin/sh\nexit 1\n")
    result = subprocess.run([root / "scripts" / "demo"], capture_output=True, check=False)
    assert result.returncode == 1
    assert not (root / ".venv" / ".bgconsole-demo-install").exists()
