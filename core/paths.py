"""Where the project finds things: the repository root and the shared data/models folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV = "MCSA_SHARED"


def shared_dir() -> Path:
    """The shared data/models folder: $MCSA_SHARED, else `../shared` beside the repository."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser() if env else (REPO_ROOT.parent / "shared").resolve()


def expand_path(value: str) -> str:
    """Expand `${SHARED}`, `${REPO}` (this repository), other environment variables and `~` in a config's path."""
    value = value.replace("${SHARED}", str(shared_dir())).replace("${REPO}", str(REPO_ROOT))
    return os.path.expanduser(os.path.expandvars(value))
