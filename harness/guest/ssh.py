"""SSH to a guest (paramiko): connect with retries until sshd answers, run a
command with a deadline, return rc/stdout/stderr."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.errors import HarnessError

# Connection resets while sshd comes up are expected and retried: keep paramiko's
# transport thread from printing them as tracebacks (the final error says enough).
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


@dataclass(frozen=True)
class CommandResult:
    cmd: str
    rc: int
    stdout: str
    stderr: str
    seconds: float


class CommandTimeout(HarnessError):
    def __init__(self, cmd: str, timeout: float, stdout: str, stderr: str) -> None:
        super().__init__(f"guest command did not finish within {timeout:.0f}s: {cmd}")
        self.cmd, self.stdout, self.stderr = cmd, stdout, stderr


class _AcceptOwnGuest(paramiko.MissingHostKeyPolicy):
    """The only peer is our own guest behind a 127.0.0.1 port forward of a QEMU
    process we started; its host key is generated per image, so nothing to pin."""

    def missing_host_key(self, client, hostname, key) -> None:
        return None


class SSHSession:
    def __init__(self, port: int, key_path: Path, user: str = "root") -> None:
        self.port = port
        self.key = paramiko.Ed25519Key.from_private_key_file(str(key_path))
        self.user = user
        self.client: paramiko.SSHClient | None = None

    def connect(self, timeout: float, alive) -> None:
        """Retry until sshd accepts us or `timeout` passes or the guest died."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline and alive():
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(_AcceptOwnGuest())
            try:
                client.connect(
                    "127.0.0.1", port=self.port, username=self.user, pkey=self.key,
                    look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=20,
                    auth_timeout=20,
                )
                transport = client.get_transport()
                assert transport is not None
                transport.set_keepalive(15)
                self.client = client
                return
            except (paramiko.SSHException, OSError, EOFError) as e:
                last_error = e
                client.close()
                time.sleep(0.2)
        raise HarnessError(f"ssh to 127.0.0.1:{self.port} not ready within {timeout:.0f}s: {last_error}")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def run(self, cmd: str, timeout: float, stdin: bytes | None = None) -> CommandResult:
        try:
            return self._run(cmd, timeout, stdin)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HarnessError(f"ssh connection to the guest failed ({type(e).__name__}: {e}) while "
                               f"running: {cmd}") from e

    def _run(self, cmd: str, timeout: float, stdin: bytes | None) -> CommandResult:
        if self.client is None:
            raise HarnessError("ssh session is not connected")
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise HarnessError(f"ssh connection to the guest is gone (while starting: {cmd})")
        started = time.monotonic()
        try:
            chan = transport.open_session(timeout=min(10.0, timeout))
        except paramiko.SSHException as e:
            if "Timeout" not in str(e):
                raise
            # The connection is up but the guest does not answer (stopped vCPUs, hung kernel).
            raise CommandTimeout(cmd, timeout, "", "the guest did not open an ssh channel") from e
        chan.settimeout(0.2)
        chan.exec_command(cmd)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = started + timeout
        while True:
            got = False
            if chan.recv_ready():
                out += chan.recv(65536)
                got = True
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                got = True
            # Done at EOF, which the server sends after the last data: exit-status may
            # arrive earlier (OpenSSH sends it when the child exits, output may still be
            # in flight), and stopping then truncated a 20 kB stdout.
            if (chan.eof_received and chan.exit_status_ready() and not chan.recv_ready()
                    and not chan.recv_stderr_ready()):
                break
            if not transport.is_active():
                raise HarnessError(f"ssh connection to the guest dropped while running: {cmd}")
            if time.monotonic() > deadline:
                chan.close()
                raise CommandTimeout(cmd, timeout, out.decode(errors="replace"), err.decode(errors="replace"))
            if not got:
                try:
                    chunk = chan.recv(65536)
                    out += chunk
                except TimeoutError:
                    pass
        rc = chan.recv_exit_status()
        chan.close()
        return CommandResult(cmd, rc, out.decode(errors="replace"), err.decode(errors="replace"),
                             time.monotonic() - started)
