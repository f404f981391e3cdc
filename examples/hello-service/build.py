"""Build a hello-service release directory.

    python3 build.py --version 1.2.0 [--variant good|badhealth|errors] --out DIR [--force]

Copies ``src/`` into DIR and writes DIR/VERSION and DIR/VARIANT. The version follows the same
rule as everywhere else in deployer (``deployer._versions.validate_version``).
"""

from __future__ import annotations

import argparse
import shutil
import stat
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "src"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

try:
    from deployer._errors import ArtefactError, DeployerError, UsageError
    from deployer._versions import validate_version
except ImportError:
    # Run from a checkout without the package installed: use the checkout's own copy.
    sys.path.insert(0, str(REPOSITORY_ROOT))
    try:
        from deployer._errors import ArtefactError, DeployerError, UsageError
        from deployer._versions import validate_version
    except ImportError as missing:
        sys.exit(
            f"build.py: error: cannot import deployer ({missing}); run it with the project's "
            f"interpreter, e.g. {REPOSITORY_ROOT / '.venv' / 'bin' / 'python'} build.py ..."
        )

__all__ = ["ENTRY_POINT", "SOURCE_DIR", "VARIANTS", "build_release", "main"]

VARIANTS = ("good", "badhealth", "errors")
ENTRY_POINT = Path("bin") / "run"


def build_release(version: str, out: Path, variant: str = "good", *, force: bool = False) -> Path:
    """Write a release of hello-service ``version`` into ``out`` and return ``out``.

    ``out`` must be missing or empty unless ``force`` is true, in which case its old contents
    are removed first (so no stale file survives into the release).
    """
    validate_version(version, where="hello-service --version")
    if variant not in VARIANTS:
        raise UsageError(
            f"hello-service --variant: unknown variant {variant!r}; "
            f"use one of {', '.join(VARIANTS)}"
        )
    out = Path(out)
    _prepare_output_dir(out, force=force)
    shutil.copytree(
        SOURCE_DIR,
        out,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    entry_point = out / ENTRY_POINT
    # The checkout may have lost the executable bit (archives, some editors): set it here.
    entry_point.chmod(entry_point.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (out / "VERSION").write_text(version + "\n", encoding="utf-8")
    (out / "VARIANT").write_text(variant + "\n", encoding="utf-8")
    return out


def _prepare_output_dir(out: Path, *, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ArtefactError(f"{out}: exists and is not a directory; choose another --out")
    resolved = out.resolve()
    if resolved == SOURCE_DIR or resolved in SOURCE_DIR.parents or SOURCE_DIR in resolved.parents:
        raise ArtefactError(
            f"{out}: overlaps the sources in {SOURCE_DIR}; choose a --out outside them"
        )
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not any(out.iterdir()):
        return
    if not force:
        raise ArtefactError(
            f"{out}: directory is not empty; choose an empty --out or pass --force to replace "
            "its contents"
        )
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a hello-service release directory.")
    parser.add_argument("--version", required=True, help="release version, e.g. 1.2.0")
    parser.add_argument(
        "--variant",
        default="good",
        choices=VARIANTS,
        help="good (default); badhealth: /health answers 503; errors: / answers 500 after "
        "ERRORS_AFTER seconds",
    )
    parser.add_argument("--out", required=True, type=Path, help="release directory to write")
    parser.add_argument(
        "--force", action="store_true", help="replace the contents of a non-empty --out"
    )
    args = parser.parse_args(argv)
    try:
        release = build_release(args.version, args.out, args.variant, force=args.force)
    except DeployerError as error:
        print(f"build.py: error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"built hello-service {args.version} ({args.variant}) in {release}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
