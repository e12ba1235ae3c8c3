"""The one user-input error type: every bad file or option names the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path


class CaseError(ValueError):
    """A user-supplied case file is missing, unreadable or inconsistent; str() is "<path>: <problem>"."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
