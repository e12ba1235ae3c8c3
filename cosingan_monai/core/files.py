"""Atomic file writes and JSON helpers: a reader never sees half a file (CONVENTIONS.md "Files")."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cosingan_monai.core.errors import CaseError


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success os.replace it onto `path`, on error delete it."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {final}: nothing was written to {tmp}")
        os.replace(tmp, final)
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
