"""Model files: located through package metadata, assembled once, refused when altered.

Corruption is always done on copies in a tmp dir; site-packages is only read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.engines import models
from pipeline.engines.local_llm import PRESETS, resolve_model
from pipeline.engines.models import (
    ModelIntegrityError,
    Piece,
    Pinned,
    SplitModel,
    concatenate_verified,
    ensure_split_model,
    package_file,
    verify_file,
)

DEFAULT = PRESETS["default"]


def pin_of(name: str, data: bytes) -> Pinned:
    return Pinned(name, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path that installed 'wheels' are written into."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def install_fake(site: Path, dist: str, files: dict[str, bytes]) -> None:
    """Write a minimal installed distribution (METADATA + RECORD) holding `files`."""
    pkg = dist.replace("-", "_")
    info = site / f"{pkg}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    rows = []
    for name, data in files.items():
        path = site / pkg / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digest = models.base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{pkg}/data/{name},sha256={digest},{len(data)}")
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


@pytest.fixture
def split_model(fake_site: Path) -> SplitModel:
    pieces = [os.urandom(50_000), os.urandom(50_000), os.urandom(1_234)]
    for i, data in enumerate(pieces, 1):
        install_fake(fake_site, f"fake-model-part{i}", {f"part{i:02d}.bin": data})
    return SplitModel(
        target=pin_of("fake.gguf", b"".join(pieces)),
        pieces=tuple(Piece(f"fake-model-part{i}", f"part{i:02d}.bin") for i in range(1, 4)),
    )


def piece_path(model: SplitModel, index: int) -> Path:
    return package_file(model.pieces[index].dist, model.pieces[index].filename, "llm")[0]


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = models.sha256_file

    def counting(path: Path) -> tuple[int, str]:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(models, "sha256_file", counting)
    return calls


def test_assembles_once_then_trusts_the_stamp(split_model: SplitModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    path = ensure_split_model(split_model, "llm", cache, subdir="llm")
    assert path == cache / "llm" / "fake.gguf"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == split_model.target.sha256
    assert [p.name for p in path.parent.iterdir()] == ["fake.gguf"], "no temporary file left behind"

    hashes = count_hashes(monkeypatch)
    assert ensure_split_model(split_model, "llm", cache, subdir="llm") == path
    assert hashes == [], "an unchanged, already verified file is not hashed again"


def test_changed_cache_copy_is_rehashed_and_rebuilt(split_model: SplitModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    path = ensure_split_model(split_model, "llm", cache)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # same size, different content, new mtime
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        verify_file(path, split_model.target, "llm", cache)
    hashes = count_hashes(monkeypatch)
    ensure_split_model(split_model, "llm", cache)
    assert path in hashes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == split_model.target.sha256


def test_tampered_installed_piece_is_named(split_model: SplitModel, tmp_path: Path) -> None:
    bad = piece_path(split_model, 1)  # a fake install in tmp_path, never site-packages
    data = bytearray(bad.read_bytes())
    data[0] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError) as err:
        ensure_split_model(split_model, "llm", tmp_path / "cache")
    assert "part02.bin" in err.value.message and "expected" in err.value.message
    assert err.value.stage == "llm"
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_wrong_whole_is_refused_even_when_pieces_carry_no_pins(split_model: SplitModel, tmp_path: Path) -> None:
    sources = [(piece_path(split_model, i), None) for i in (1, 0, 2)]  # right pieces, wrong order
    target = tmp_path / "out" / "fake.gguf"
    with pytest.raises(ModelIntegrityError) as err:
        concatenate_verified(sources, target, split_model.target, "llm", tmp_path / "cache")
    message = err.value.message
    assert str(target) in message and split_model.target.sha256 in message and "refusing" in message
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_missing_package_says_how_to_install(tmp_path: Path) -> None:
    model = SplitModel(Pinned("x.gguf", 1, "0" * 64), (Piece("no-such-model-part1", "part01.bin"),))
    with pytest.raises(models.EngineError, match="not installed.*requirements-models.txt"):
        ensure_split_model(model, "llm", tmp_path)


def test_not_a_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ModelIntegrityError, match="not a GGUF"):
        resolve_model(str(path), tmp_path)


def test_cache_dir_setting_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert models.cache_dir(str(tmp_path / "models")) == tmp_path / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "voice-assistant"
    assert "site-packages" not in str(models.cache_dir(""))


# --- the real default LLM pieces (read from site-packages, corrupted only as copies) ---


def real_pieces() -> list[tuple[Path, Pinned | None]]:
    try:
        return [package_file(p.dist, p.filename, "llm") for p in DEFAULT.pieces]
    except models.EngineError as exc:
        pytest.skip(f"default LLM model packages not installed: {exc}")


@pytest.mark.models
def test_real_pieces_are_found_through_metadata_with_their_record() -> None:
    sources = real_pieces()
    assert len(sources) == 6
    assert sum(pin.size for _, pin in sources if pin) == DEFAULT.target.size == 491_400_064
    assert all("site-packages" in str(path) or "dist-packages" in str(path) for path, _ in sources)
    assert not any(name.startswith("pandas_sns") for name in sys.modules), "their Python code is never imported"


@pytest.mark.models
def test_tampered_copy_of_a_real_piece_is_refused(tmp_path: Path) -> None:
    sources = real_pieces()
    original, pin = sources[0]
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    with open(copy, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0x55]))
    target = tmp_path / "out" / DEFAULT.target.name
    with pytest.raises(ModelIntegrityError) as err:
        concatenate_verified([(copy, pin), *sources[1:]], target, DEFAULT.target, "llm", tmp_path / "cache")
    assert str(copy) in err.value.message and "SHA-256" in err.value.message and pin is not None and pin.sha256 in err.value.message
    assert not target.exists()


@pytest.mark.models
def test_truncated_copy_of_a_real_piece_is_refused_before_writing(tmp_path: Path) -> None:
    sources = real_pieces()
    original, pin = sources[5]
    copy = tmp_path / original.name
    with open(original, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read(1_000_000))
    target = tmp_path / "out" / DEFAULT.target.name
    with pytest.raises(ModelIntegrityError) as err:
        concatenate_verified([*sources[:5], (copy, pin)], target, DEFAULT.target, "llm", tmp_path / "cache")
    assert str(copy) in err.value.message and "size 1,000,000 bytes, expected 45,755,264" in err.value.message
    assert not (tmp_path / "out").exists(), "nothing was written"
