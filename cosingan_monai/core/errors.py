"""The one user-input error type: every bad file or option names the file and the problem."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class CaseError(ValueError):
    """A user-supplied case file is missing, unreadable or inconsistent; str() is "<path>: <problem>"."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def no_space_message(exc: BaseException) -> str | None:
    """`no space left on device: PATH` when `exc` is (or wraps) an ENOSPC OSError, else None (the CLI's wording)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return f"no space left on device: {exc.filename or 'unknown path'}"
        if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):  # copytree's error list
            for entry in exc.args[0]:
                if len(entry) == 3 and "No space left on device" in str(entry[2]):
                    return f"no space left on device: {entry[1]}"
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None
