"""Atomic file writes and JSON helpers: a reader never sees half a file (CONVENTIONS.md "Files")."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cosingan_monai.core.errors import CaseError


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike[str], keep_suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; on success os.replace it onto `path`, on error delete it.

    `keep_suffix` (e.g. ".nii.gz", which `path` must end in) stays at the end of the temp name
    (`name.tmp-<pid>.nii.gz`), for writers such as `nib.save` that pick the format from the name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if keep_suffix and not final.name.endswith(keep_suffix):
        raise ValueError(f"{final}: does not end in {keep_suffix!r}")
    stem = final.name[: len(final.name) - len(keep_suffix)]
    tmp = final.with_name(f"{stem}.tmp-{os.getpid()}{keep_suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {final}: nothing was written to {tmp}")
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno == errno.ENOSPC and not exc.filename:  # a write() error names no file: name the target
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final)) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: str | os.PathLike[str], payload: Any, indent: int = 2) -> Path:
    """Write JSON atomically (temp file + rename); values JSON cannot hold are written as str()."""
    final = Path(path)
    with atomic_write_path(final) as tmp:
        tmp.write_text(json.dumps(payload, indent=indent, default=str) + "\n", encoding="utf-8")
    return final


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; CaseError names the file when it is missing or malformed."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaseError(p, f"not readable JSON ({exc})") from exc


#: how temp names look: `name.tmp-<pid>` (files and folders) or `stem.tmp-<pid>.ext` (TorchScript exports)
TEMP_NAME = re.compile(r"\.tmp-(\d+)(\.|$)")


def remove_stale_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Delete every `*.tmp-<pid>` file or folder under `root` (leftovers of killed writers); returns what went.

    Call it only while holding the folder's lock and before writing into it (run_folder.RunFolder does): then no
    live writer owns them, whatever pid they name (a pid may be reused, or be this process's own in a test).
    """
    gone: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            match = TEMP_NAME.search(name)
            if match is None:
                continue
            path = Path(dirpath) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                dirnames.remove(name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            gone.append(path)
    return gone


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size and sha256 of a file, or of every file under a folder (one hash over sorted names, sizes, hashes)."""
    p = Path(path)
    if p.is_dir():
        digest = hashlib.sha256()
        files = sorted(f for f in p.rglob("*") if f.is_file())
        size = 0
        for f in files:
            one = file_fingerprint(f)
            size += one["size"]
            digest.update(f"{f.relative_to(p).as_posix()}\0{one['size']}\0{one['sha256']}\n".encode())
        return {"path": str(p.resolve()), "files": len(files), "size": size, "sha256": digest.hexdigest()}
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(p.resolve()), "size": p.stat().st_size, "sha256": digest.hexdigest()}


def move_files(src_dir: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> list[Path]:
    """os.replace every file of SRC_DIR into DEST_DIR (same filesystem: each lands whole), then remove SRC_DIR."""
    src, dest = Path(src_dir), Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    moved = []
    for f in sorted(src.iterdir()) if src.is_dir() else []:
        if f.is_file():
            os.replace(f, dest / f.name)
            moved.append(dest / f.name)
    shutil.rmtree(src, ignore_errors=True)
    return moved
