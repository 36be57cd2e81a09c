"""The run's output directory: checked before any work (a bad --out fails in a
second, not after the measurements), and written file by file atomically, so an
interrupted run leaves whole files of what it had, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from harness.errors import HarnessError


def prepare_out(path: Path) -> Path:
    """Create `path` (and its parents) and prove it writable, or raise saying why."""
    path = path.expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise HarnessError(f"--out {path}: {e.filename or path} exists and is not a directory") from e
    except NotADirectoryError as e:
        raise HarnessError(f"--out {path}: a part of the path is a file, not a directory") from e
    except OSError as e:
        raise HarnessError(f"--out {path}: cannot create it ({e.strerror})") from e
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".harness-write-test-"):
            pass
    except OSError as e:
        raise HarnessError(f"--out {path}: not writable ({e.strerror})") from e
    return path


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, then rename over `path` (atomic on one file system)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # what open() would have given it (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
