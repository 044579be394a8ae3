"""Releases of the sample app on a sandbox host: install one, read the current one.

A host directory holds ``releases/<version>/release.json`` and a ``current`` symlink to
the installed one. Installing writes the new release, then swaps the symlink atomically;
the app reads ``current/release.json`` on every request, so a deploy needs no restart.

This module is also the host's deploy program: ``bin/deploy REF`` runs
``python -m console.demo.releases --dir HOSTDIR REF`` where REF is ``good`` (the next
version), ``bad`` (the next version, broken: ``/`` and ``/health`` answer 500) or a
version number such as ``2.0.1`` (a good release with that version).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Behaviour = Literal["good", "bad"]
INITIAL_VERSION = "1.0.0"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# Pauses between deploy steps, so the streamed output looks like a deploy, not a dump.
_STEP_PAUSE = 0.15


@dataclass(frozen=True, slots=True)
class Release:
    """One installed release of the sample app."""

    version: str
    behaviour: Behaviour
    installed_at: float

    def to_json(self) -> str:
        """The release.json text."""
        data = {
            "version": self.version,
            "behaviour": self.behaviour,
            "installed_at": self.installed_at,
        }
        return json.dumps(data, indent=2) + "\n"


def read_current(host_dir: Path) -> Release | None:
    """The installed release, or None when none is (or its file is unreadable)."""
    try:
        data = json.loads((host_dir / "current" / "release.json").read_text())
        behaviour: Behaviour = "bad" if data.get("behaviour") == "bad" else "good"
        return Release(str(data["version"]), behaviour, float(data.get("installed_at", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def next_version(host_dir: Path) -> str:
    """One minor version above the highest release ever installed on the host."""
    releases = host_dir / "releases"
    versions = [p.name for p in releases.iterdir()] if releases.is_dir() else []
    known = sorted((v for v in versions if _VERSION.match(v)), key=_version_key)
    if not known:
        return INITIAL_VERSION
    major, minor, _ = _version_key(known[-1])
    return f"{major}.{minor + 1}.0"


def install(host_dir: Path, version: str, behaviour: Behaviour) -> Release:
    """Write ``releases/<version>/release.json`` and point ``current`` at it atomically."""
    release = Release(version, behaviour, time.time())
    target = host_dir / "releases" / version
    target.mkdir(parents=True, exist_ok=True)
    tmp_file = target / "release.json.tmp"
    tmp_file.write_text(release.to_json())
    os.replace(tmp_file, target / "release.json")
    # A new symlink renamed over the old one: readers see the old or the new release,
    # never a missing one.
    tmp_link = host_dir / "current.tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(Path("releases") / version)
    os.replace(tmp_link, host_dir / "current")
    return release


def resolve_ref(host_dir: Path, ref: str) -> tuple[str, Behaviour]:
    """The version and behaviour a deploy ref asks for.

    Raises:
        ValueError: the ref is none of good, bad or a version number.
    """
    if ref == "good":
        return next_version(host_dir), "good"
    if ref == "bad":
        return next_version(host_dir), "bad"
    cleaned = ref.removeprefix("v")
    if _VERSION.match(cleaned):
        return cleaned, "good"
    raise ValueError(f"unknown ref {ref!r}: use good, bad or a version like 2.0.1")


def _step(text: str) -> None:
    print(text, flush=True)
    time.sleep(_STEP_PAUSE)


def main(argv: list[str] | None = None) -> int:
    """The host's deploy program (``bin/deploy REF``); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="bin/deploy", description="Install a release of the demo app on this host."
    )
    parser.add_argument("--dir", required=True, type=Path, help="the host directory")
    parser.add_argument("ref", help="good, bad, or a version number such as 2.0.1")
    args = parser.parse_args(argv)
    host_dir: Path = args.dir.resolve()
    try:
        version, behaviour = resolve_ref(host_dir, args.ref)
    except ValueError as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 2
    before = read_current(host_dir)
    _step(f"deploy: {before.version if before else 'nothing'} -> {version} ({behaviour})")
    _step(f"deploy: unpacking release {version} into releases/{version}")
    _step("deploy: running database migrations (none pending)")
    install(host_dir, version, behaviour)
    if behaviour == "bad":
        print(f"deploy: release {version} installed; it answers 500 on / and /health", flush=True)
    else:
        print(f"deploy: release {version} installed and live on this host", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
