"""Shared builders for the artefact tests: real files, real keys, real signatures."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from deployer.artefacts import BuiltArtefact, build_artefact, generate_keypair, sign_manifest

# The real tool; a missing binary must fail the tests (bootstrap installs it).
MINISIGN = "/usr/bin/minisign"


def run_minisign(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MINISIGN, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def make_source(root: Path, *, payload: str = "hello") -> Path:
    src = root / "src"
    (src / "bin").mkdir(parents=True)
    run = src / "bin" / "run"
    run.write_text("#!/bin/sh\necho run\n")
    run.chmod(0o755)
    (src / "app.txt").write_text(payload)
    (src / "static").mkdir()
    (src / "static" / "style.css").write_text("body{}\n")
    return src


def make_keys(root: Path, name: str = "release") -> tuple[Path, Path]:
    pair = generate_keypair(root / "keys", name)
    return pair.secret_path, pair.public_path


def make_signed(root: Path, secret: Path, *, app: str = "hello", version: str = "1.0.0",
                payload: str = "hello", subdir: str | None = None) -> BuiltArtefact:
    base = root / (subdir or f"{app}-{version}-{hashlib.sha1(payload.encode()).hexdigest()[:6]}")
    src = make_source(base, payload=payload)
    built = build_artefact(src, app=app, version=version, out_dir=base / "out")
    sign_manifest(built.manifest_path, secret)
    return built


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes, to prove that nothing changed."""
    snap: dict[str, bytes] = {}
    if not root.exists():
        return snap
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            snap[str(path.relative_to(root))] = path.read_bytes()
    return snap
