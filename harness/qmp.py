"""A minimal QMP client (QEMU's JSON monitor protocol) over a unix socket:
enough to quit a guest, stop its vCPUs, and ask its status."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from .errors import HarnessError


class QMPError(HarnessError):
    pass


class QMP:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = b""

    def connect(self, wait: float = 10.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(str(self.path))
                break
            except OSError as e:
                s.close()
                if time.monotonic() > deadline:
                    raise QMPError(f"cannot connect to QMP socket {self.path}: {e}") from e
                time.sleep(0.05)
        self.sock = s
        self._read_msg()  # greeting
        self.command("qmp_capabilities")

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None

    def _read_msg(self) -> dict:
        assert self.sock is not None
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QMPError("QMP connection closed by QEMU")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def command(self, name: str, **arguments: object) -> object:
        if self.sock is None:
            raise QMPError("QMP not connected")
        msg: dict[str, object] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read_msg()
            if "event" in reply:
                continue
            if "error" in reply:
                raise QMPError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")
