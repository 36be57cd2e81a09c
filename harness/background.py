"""One piece of work run in a thread while the main thread does another: the
guest image (network and dpkg bound) while the kernel compiles (CPU bound)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from harness.hostcmd import kill_running_commands

T = TypeVar("T")


class BackgroundJob(Generic[T]):
    def __init__(self, what: str, work: Callable[[], T]) -> None:
        self.what = what
        self._work = work
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=what, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._work()
        except BaseException as e:  # handed to whoever asks for the result
            self._error = e

    def result(self) -> T:
        """Wait for the work; its exception is raised here, in the caller's thread."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def cancel(self, timeout: float = 60) -> None:
        """Stop the work: kill its running command (its own cleanup then runs in the
        thread: temp dirs removed, mounts undone) and wait for the thread."""
        deadline = time.monotonic() + timeout
        # Again and again: between two commands there is nothing to kill yet.
        while self._thread.is_alive() and self._thread.ident is not None and time.monotonic() < deadline:
            kill_running_commands(self._thread.ident)
            self._thread.join(0.5)
