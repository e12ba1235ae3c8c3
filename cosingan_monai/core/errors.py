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


class BundleError(RuntimeError):
    """A bundle workflow run as a subprocess failed; str() is one line: the bundle, the workflow, the cause line of
    its log and the log's path (the CLI prints it as the whole error)."""

    def __init__(self, bundle: str, workflow: str, returncode: int, cause: str, log: str | os.PathLike[str]) -> None:
        self.bundle, self.workflow, self.returncode, self.cause = bundle, workflow, returncode, cause
        self.log = Path(log)
        super().__init__(f"bundle {bundle} {workflow} failed (exit {returncode}): {cause}; log: {self.log}")

    def __reduce__(self) -> tuple[type, tuple[str, str, int, str, Path]]:
        return type(self), (self.bundle, self.workflow, self.returncode, self.cause, self.log)


def failure_message(exc: BaseException) -> str | None:
    """The CLI's one-line message for a failure outside the program: a full disk (`no_space_message`) or a failed
    bundle run (`BundleError`), also when wrapped; None for anything else (a bug: its traceback is kept)."""
    message = no_space_message(exc)
    seen: set[int] = set()
    while message is None and exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BundleError):
            message = str(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return message
