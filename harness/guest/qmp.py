"""QMP (QEMU's JSON monitor protocol) through QEMU's own client library
(`qemu.qmp`, PyPI): the harness only adds waiting for QEMU's socket to appear
and its own error type, so a failure reads like every other harness error."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from qemu.qmp import QMPError as LibraryQMPError
from qemu.qmp.legacy import QEMUMonitorProtocol
from qemu.qmp.util import get_or_create_event_loop

from harness.errors import HarnessError


class QMPError(HarnessError):
    pass


class QMP:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._qmp: QEMUMonitorProtocol | None = None

    def connect(self, wait: float = 10.0) -> None:
        """Connect (retrying while QEMU creates its socket) and negotiate capabilities."""
        deadline = time.monotonic() + wait
        while True:
            qmp = QEMUMonitorProtocol(str(self.path))
            try:
                with unwinding(qmp):
                    qmp.connect(negotiate=True)
                break
            except (OSError, EOFError, LibraryQMPError) as e:
                with contextlib.suppress(EOFError, OSError, LibraryQMPError):
                    qmp.close()
                if time.monotonic() > deadline:
                    raise QMPError(f"cannot connect to QMP socket {self.path}: {e}") from e
                time.sleep(0.05)
        qmp.settimeout(self.timeout)
        self._qmp = qmp

    def close(self) -> None:
        """Disconnect. QEMU may already have closed the socket (after `quit`, or when it
        died): the library then reports the end of the stream, which is no error here."""
        if self._qmp is not None:
            qmp, self._qmp = self._qmp, None
            with contextlib.suppress(EOFError, OSError, LibraryQMPError), unwinding(qmp):
                qmp.close()

    def command(self, command: str, /, **arguments: object) -> object:
        """`command` positional-only: QMP arguments may be called `name` (trace-event-set-state)."""
        if self._qmp is None:
            raise QMPError("QMP not connected")
        try:
            with unwinding(self._qmp):
                return self._qmp.cmd(command, **arguments)
        except (OSError, EOFError, LibraryQMPError) as e:
            raise QMPError(f"QMP {command}: {e or type(e).__name__}") from e


@contextlib.contextmanager
def unwinding(qmp: QEMUMonitorProtocol) -> Iterator[None]:
    """An interrupt (Ctrl-C, SIGTERM) that lands inside the library's event loop leaves
    its coroutines suspended mid-session; at exit they would fail and print tracebacks
    ("Task exception was never retrieved", "no running event loop"). Cancel them, let
    them unwind in the loop, drop the session, and let the interrupt go on."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        loop = get_or_create_event_loop()
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            qmp.close()
        raise
