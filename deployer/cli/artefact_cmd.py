"""`deployer keys ...` and `deployer artefact ...`: signing keys, build, sign, publish, verify."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import click

from .._errors import UsageError
from .._versions import validate_version
from ..artefacts import (
    build_artefact,
    generate_keypair,
    open_store,
    sign_manifest,
    verify_release,
)
from ..artefacts._build import MANIFEST_NAME, SIGNATURE_NAME
from ..artefacts._manifest import Manifest, validate_app_name
from ._common import console, out, print_json

_PASSWORD_ENV = "DEPLOYER_KEY_PASSWORD"


@click.group()
def keys() -> None:
    """Release-signing keys (minisign format)."""


@keys.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for NAME.key (secret) and NAME.pub (public).")
@click.option("--name", default="release", show_default=True, help="Base name of the key files.")
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keys_generate(out_dir: Path, name: str, force: bool) -> None:
    """Generate an unencrypted minisign key pair."""
    pair = generate_keypair(out_dir, name, force=force)
    console.print(f"key {pair.key_id_hex}: secret {pair.secret_path}, public {pair.public_path}",
                  soft_wrap=True)


@click.group()
def artefact() -> None:
    """Build, sign, publish and verify artefacts."""


def _version(value: str) -> str:
    return validate_version(value, where="--version")


@artefact.command("build")
@click.argument("src_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--app", required=True, help="Application name.")
@click.option("--version", "version", required=True, help="Release version.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (default: ./dist/<app>-<version>).")
@click.option("--source-commit", default=None, help="Source commit recorded in the manifest.")
@click.option("--build-id", default=None, help="Build id recorded in the manifest.")
@click.option("--irreversible", "irreversible", default=None, metavar="REASON",
              help="The release has no rollback path (e.g. an irreversible data migration), and "
              "why: its deployments are High Risk.")
def artefact_build(src_dir: Path, app: str, version: str, out_dir: Path | None,
                   source_commit: str | None, build_id: str | None,
                   irreversible: str | None) -> None:
    """Pack SRC_DIR into a reproducible tarball and write its manifest."""
    validate_app_name(app, where="--app")
    _version(version)
    target = out_dir if out_dir is not None else Path("dist") / f"{app}-{version}"
    built = build_artefact(src_dir, app=app, version=version, out_dir=target,
                           source_commit=source_commit, build_id=build_id,
                           irreversible=irreversible)
    console.print(f"built {built.tarball} (sha256 {built.manifest.sha256}, "
                  f"{built.manifest.size} bytes) and {built.manifest_path}", soft_wrap=True)


@artefact.command("sign")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help=f"minisign secret key (password from ${_PASSWORD_ENV} if it is encrypted).")
def artefact_sign(manifest: Path, key_path: Path) -> None:
    """Sign MANIFEST; writes MANIFEST.minisig next to it."""
    sig = sign_manifest(manifest, key_path, password=os.environ.get(_PASSWORD_ENV))
    console.print(f"signed: {sig}", soft_wrap=True)


def _gather(paths: tuple[Path, ...], scratch: Path) -> list[Path]:
    """Artefact directories to publish: the directories given, or one assembled from files."""
    if all(p.is_dir() for p in paths):
        return list(paths)
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{missing[0]} does not exist")
    if any(p.is_dir() for p in paths):
        raise UsageError("give either artefact directories or the files of one artefact, not both")
    roles = {"manifest": [p for p in paths if p.name.endswith(".json")],
             "signature": [p for p in paths if p.name.endswith(".minisig")],
             "tarball": [p for p in paths if p.name.endswith(".tar.gz")]}
    other = [p for p in paths if not any(p in files for files in roles.values())]
    if other:
        raise UsageError(f"{other[0]}: not a manifest (.json), signature (.minisig) or tarball")
    if len(roles["manifest"]) != 1 or len(roles["signature"]) > 1 or len(roles["tarball"]) > 1:
        raise UsageError("give exactly one manifest, with its signature and tarball")
    manifest_path = roles["manifest"][0]
    manifest = Manifest.from_json(manifest_path.read_bytes(), source=str(manifest_path))
    sig = roles["signature"][0] if roles["signature"] else manifest_path.with_name(
        manifest_path.name + ".minisig")
    tarball = roles["tarball"][0] if roles["tarball"] else manifest_path.with_name(
        manifest.tarball)
    shutil.copyfile(manifest_path, scratch / MANIFEST_NAME)
    if sig.is_file():
        shutil.copyfile(sig, scratch / SIGNATURE_NAME)
    if tarball.is_file():
        if tarball.name != manifest.tarball:
            raise UsageError(f"{tarball}: the manifest names the tarball {manifest.tarball!r}")
        os.symlink(tarball.resolve(), scratch / manifest.tarball)
    return [scratch]


@artefact.command("publish")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path),
                metavar="ARTEFACT_DIR_OR_FILES...")
@click.option("--store", "store_url", required=True, help="Store URL (file://, s3://).")
def artefact_publish(paths: tuple[Path, ...], store_url: str) -> None:
    """Publish signed artefacts; an existing version with the same tarball is left as is."""
    store = open_store(store_url)
    with tempfile.TemporaryDirectory(prefix="deployer-publish-") as scratch:
        for artefact_dir in _gather(paths, Path(scratch)):
            result = store.publish(artefact_dir)
            if result.created:
                console.print(f"published {result.app} {result.version} to {store.url}",
                              soft_wrap=True)
            else:
                console.print(f"{result.app} {result.version} is already in {store.url} with the "
                              "same tarball: nothing changed", soft_wrap=True)


@artefact.command("verify")
@click.option("--store", "store_url", required=True, help="Store URL.")
@click.option("--app", required=True, help="Application name.")
@click.option("--version", "version", required=True, help="Release version.")
@click.option("--trusted-key", "trusted_keys", multiple=True, required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Trusted public key (repeat).")
def artefact_verify(store_url: str, app: str, version: str,
                    trusted_keys: tuple[Path, ...]) -> None:
    """Check the signature, identity and tarball digest of a release."""
    validate_app_name(app, where="--app")
    _version(version)
    manifest = verify_release(open_store(store_url), app, version, list(trusted_keys))
    console.print(f"verified {manifest.app} {manifest.version}: signed by a trusted key, "
                  f"sha256 {manifest.sha256}", soft_wrap=True)


@artefact.command("list")
@click.option("--store", "store_url", required=True, help="Store URL.")
@click.option("--app", default=None, help="Only this application.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def artefact_list(store_url: str, app: str | None, as_json: bool) -> None:
    """List published releases."""
    if app is not None:
        validate_app_name(app, where="--app")
    manifests = open_store(store_url).list(app)
    if as_json:
        print_json([{k: v for k, v in asdict(m).items() if v is not None} for m in manifests])
        return
    if not manifests:
        console.print("no releases", soft_wrap=True)
        return
    for m in manifests:
        out.print(f"{m.app}\t{m.version}\t{m.created}\t{m.sha256}\t{m.size}", markup=False,
                  soft_wrap=True)
