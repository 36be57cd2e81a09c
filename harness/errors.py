"""Exceptions that carry their evidence.

`HarnessError` is a user-facing failure: the CLI prints its message on one line
(no traceback) and exits non-zero. Subclasses add the evidence a kernel
engineer needs to act: the command line, the console tail, stderr.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A failure the user can act on; `str()` says what failed and what to do."""


class MissingToolError(HarnessError):
    def __init__(self, tool: str, package: str, why: str = "") -> None:
        hint = f" ({why})" if why else ""
        super().__init__(
            f"'{tool}' not found{hint}: install the Debian package '{package}' "
            f"(or run scripts/bootstrap-host.sh)"
        )
        self.tool = tool
        self.package = package


class ConfigFragmentError(HarnessError):
    """A config fragment asked for an option the kernel's Kconfig did not keep."""


class BuildError(HarnessError):
    def __init__(self, what: str, log_path: str, error_lines: list[str]) -> None:
        lines = "\n".join(f"    {line}" for line in error_lines) or "    (no error lines found)"
        super().__init__(f"{what} failed; full log: {log_path}\n  first error lines:\n{lines}")
        self.what = what
        self.log_path = log_path
        self.error_lines = error_lines


class KernelUnavailable(HarnessError):
    """A kernel (or a variant of it) that cannot be had; `cause` is why."""

    def __init__(self, variant: str, cause: HarnessError) -> None:
        super().__init__(f"kernel variant {variant!r} unavailable: {cause}")
        self.cause = cause


def does_not_build(e: BaseException) -> bool:
    """A kernel or module that does not build, or a config its tree cannot satisfy: the
    code under test's failure (git bisect skips that commit), not the set-up's."""
    if isinstance(e, KernelUnavailable):
        return does_not_build(e.cause)
    return isinstance(e, (BuildError, ConfigFragmentError))


class GuestError(HarnessError):
    """A guest failed; the message ends with the last console lines."""

    def __init__(self, message: str, console_tail: list[str] | None = None) -> None:
        self.console_tail = console_tail or []
        tail = "\n".join(f"    | {line}" for line in self.console_tail)
        full = f"{message}\n  last console lines:\n{tail}" if tail else message
        super().__init__(full)
        self.summary = message


class GuestTimeout(GuestError):
    pass


class GuestCommandError(GuestError):
    def __init__(self, cmd: str, rc: int, stdout: str, stderr: str, console_tail: list[str]) -> None:
        msg = f"guest command failed (exit {rc}): {cmd}"
        if stderr.strip():
            msg += "\n  stderr:\n" + "\n".join(f"    {line}" for line in stderr.rstrip().splitlines()[-20:])
        if stdout.strip():
            msg += "\n  stdout (last lines):\n" + "\n".join(
                f"    {line}" for line in stdout.rstrip().splitlines()[-10:]
            )
        super().__init__(msg, console_tail)
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


class Unmeasurable(HarnessError):
    """The kernel or the host lacks what a measurement needs (a traceable function,
    a config option, a tool): the claims that need it are inconclusive, saying why.
    Anything else that goes wrong during an experiment is an error."""


class MeasurementFailure(HarnessError):
    """The measuring side failed, not the kernel under test (e.g. a receiver that did
    not read what the kernel delivered to it): the lab measures the experiment once
    more, and a second failure makes it an error, never a verdict on the kernel."""
