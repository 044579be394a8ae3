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
    return [
        c
        for c in log.read_text().splitlines()
        if c.startswith(("python -m pip install", "bgconsole"))
    ]


def test_installs_once_then_again_only_when_pyproject_changes(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    install = "python -m pip install -q --no-compile -e .[demo,fast]"
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


def test_a_venv_without_pip_gets_it_from_the_host_pip_in_the_same_install(
    tmp_path: Path,
) -> None:
    # ensurepip is as slow as the rest of the install; python3's own pip installs pip
    # into the venv together with everything else.
    root = _scratch(tmp_path)
    log = root / "calls.log"
    python = root / ".venv" / "bin" / "python"
    python.write_text(
        f'#!/bin/sh\n[ "$*" = "-m pip --version" ] && exit 1\necho "python $*" >> {log}\n'
    )
    host_bin = tmp_path / "host-bin"
    host_bin.mkdir()
    python3 = host_bin / "python3"
    python3.write_text(f'#!/bin/sh\necho "python3 $*" >> {log}\n')
    python3.chmod(0o755)
    env = {"PATH": f"{host_bin}:/usr/bin:/bin"}
    subprocess.run([root / "scripts" / "demo"], check=True, capture_output=True, env=env)
    calls = log.read_text().splitlines()
    assert (
        "python3 -m pip --python .venv/bin/python install -q --no-compile pip -e .[demo,fast]"
        in (calls)
    )
    assert not [c for c in calls if "ensurepip" in c]
    assert calls[-1] == "bgconsole demo"
