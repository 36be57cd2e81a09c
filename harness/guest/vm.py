"""One QEMU guest from launch to a guaranteed end.

`Guest` owns the QEMU process (in its own session, killed with the harness even
on SIGKILL via PR_SET_PDEATHSIG), the console watcher, QMP and SSH. Use it as a
context manager: every exit path (exception, timeout, Ctrl-C) stops QEMU.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pexpect

from harness.artifacts.image import GuestImage
from harness.artifacts.kernel import Kernel
from harness.cache import Cache
from harness.errors import GuestCommandError, GuestError, GuestTimeout, HarnessError
from harness.guest.accel import choose_accel
from harness.guest.console import ConsoleWatcher, NicInfo, parse_ready_line
from harness.guest.qemu_check import check_qemu
from harness.guest.qemu_cmd import GuestSpec, qemu_argv
from harness.guest.qmp import QMP, QMPError
from harness.guest.ssh import CommandResult, CommandTimeout, SSHSession
from harness.hostcmd import run_checked
from harness.nics import DEFAULT_NICS, boot_modules, management_model, nic

QEMU = "qemu-system-x86_64"
PR_SET_PDEATHSIG = 1


# How much longer a debug-flavour guest may take to boot (Guest.boot_timeout).
DEBUG_BOOT_FACTOR = 5


@dataclass(frozen=True)
class GuestOptions:
    accel: str = "auto"  # auto | kvm | tcg
    memory_mb: int = 1024
    cpus: int = 2
    nics: tuple[str, ...] = DEFAULT_NICS  # NIC models of the catalogue (harness.nics), on one private hub
    cmdline_extra: tuple[str, ...] = ()
    iommu: bool = False
    qemu_extra: tuple[str, ...] = ()
    boot_timeout: float = 120.0  # QEMU start to the init's READY line
    ssh_timeout: float = 60.0  # READY to an SSH session
    command_timeout: float = 120.0  # default bound of one guest command
    workdir: Path | None = None  # console log, QMP socket; a temp dir by default
    # The cost probe's TCG plugin (harness.artifacts.qemu_plugin): the guest runs under TCG
    # whatever `accel` says (a plugin sees only TCG's blocks), with the DMA-API checker off.
    cost_plugin: Path | None = None


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another file system
        shutil.copy2(src, dest)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the QEMU child: get SIGKILL when the harness dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class BootTimes:
    """Seconds from QEMU launch to each boot phase."""

    banner: float | None = None  # kernel printed "Linux version" (firmware + kernel load done)
    init: float | None = None  # kernel started the init
    ready: float = 0.0  # init printed READY (NICs bound, sshd listening)
    ssh: float = 0.0  # first SSH session up
    accel_reason: str = ""

    def summary(self) -> str:
        def fmt(x: float | None) -> str:
            return "?" if x is None else f"{x:.2f}s"

        return (f"kernel banner {fmt(self.banner)}, init {fmt(self.init)}, READY {fmt(self.ready)}, "
                f"ssh {fmt(self.ssh)}")


class Guest:
    def __init__(self, kernel: Kernel, image: GuestImage, options: GuestOptions | None = None,
                 cache: Cache | None = None) -> None:
        self.kernel = kernel
        self.image = image
        self.options = options or GuestOptions()
        self.cache = cache or Cache()
        self.child: pexpect.spawn | None = None
        self.console: ConsoleWatcher | None = None
        self.qmp: QMP | None = None
        self.ssh: SSHSession | None = None
        self.spec: GuestSpec | None = None
        self.argv: list[str] = []
        self.times = BootTimes()
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.workdir: Path | None = None
        self.exit_reason: str | None = None
        self.crash_expected = False  # a test that crashes the guest on purpose sets this
        self._loaded: dict[str, Path] = {}  # driver module -> the .ko file loaded
        # What probes learnt of this guest (PCI drivers, traceable functions): asked once,
        # forgotten when a driver module is reloaded.
        self.facts: dict[str, object] = {}

    # ---- lifecycle -------------------------------------------------------
    def __enter__(self) -> Guest:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        check_qemu(QEMU)
        opts = self.options
        if opts.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="harness-guest-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = opts.workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        choice = choose_accel("tcg" if opts.cost_plugin else opts.accel, self.kernel.boot_image, self.cache, QEMU)
        self.times.accel_reason = choice.reason
        share = self._stage_modules() if self.kernel.module_files else None
        self.spec = GuestSpec(
            kernel_image=self.kernel.boot_image, rootfs=self.image.rootfs, accel=choice.accel,
            ssh_port=free_port(), qmp_socket=self.workdir / "qmp.sock", initrd=self.kernel.initrd,
            init=self.image.init, memory_mb=opts.memory_mb, cpus=opts.cpus, nics=opts.nics,
            cmdline_extra=(*self.kernel.boot_args, *opts.cmdline_extra),
            modules=boot_modules(self.kernel.modules, opts.nics),
            module_share=share, iommu=opts.iommu, qemu_extra=opts.qemu_extra, trace_log=self.trace_log,
            plugin=opts.cost_plugin, plugin_socket=self.cost_socket if opts.cost_plugin else None,
        )
        self._launch_and_wait()

    @property
    def boot_timeout(self) -> float:
        """The options' bound, longer for the debug flavour: KASAN and lockdep under TCG
        took 116 s from QEMU's start to READY (6.12.95, a kernel build beside it) where
        the default kernel takes 3-4 s."""
        return self.options.boot_timeout * (DEBUG_BOOT_FACTOR if self.kernel.debug else 1)

    def _launch_and_wait(self) -> None:
        assert self.spec is not None
        for _attempt in range(3):
            started = self._launch()
            if self.console.wait_ready(self.boot_timeout, self.alive):
                break
            if not self._lost_port_race():
                self._fail_boot(started)
            # Another process took our port between free_port() and QEMU's bind.
            self._kill()
            self.spec = replace(self.spec, ssh_port=free_port())
        else:
            raise GuestError(f"could not forward a free 127.0.0.1 port to the guest: {self.command_line}")
        self.times.ready = time.monotonic() - started
        self.times.banner, self.times.init = self.console.banner_at, self.console.init_at
        self.ssh = SSHSession(self.spec.ssh_port, self.image.ssh_key)
        try:
            self.ssh.connect(self.options.ssh_timeout, self.alive)
        except HarnessError as e:
            raise GuestError(f"{e}\n  qemu: {self.command_line}", self.console.last_lines()) from e
        self.times.ssh = time.monotonic() - started
        if self.options.iommu:
            self._check_behind_iommu()

    # ---- driver modules (self-built kernels) ------------------------------
    def _stage_modules(self) -> Path:
        """The 9p share the guest mounts on /lib/modules: this kernel's NIC driver
        modules (hard links to the cached artifacts) with a depmod index."""
        assert self.workdir is not None
        root = self.workdir / "modroot"
        moddir = root / "lib/modules" / self.kernel.release / "kernel"
        for module, path in self.kernel.module_files.items():
            _link_or_copy(path, moddir / f"{module}.ko")
        run_checked(["depmod", "-b", str(root), self.kernel.release], what="depmod on the guest's driver modules")
        self._loaded = dict(self.kernel.module_files)
        return root / "lib/modules"

    def use_kernel_modules(self, kernel: Kernel) -> list[str]:
        """Load `kernel`'s driver modules in place of the running ones (the same base
        kernel, another variant): rmmod and insmod each module whose build differs,
        find the NICs again and open the reloaded ones, as the guest's init does at
        boot. An experiment then starts from a booted guest's state: its driver's first
        open (igb_open filling every rx ring) is not inside the experiment, where the
        debug flavour's page check would count the rings' pages as grown. Returns the
        modules swapped."""
        if kernel.base_key != self.kernel.base_key or not kernel.module_files:
            raise HarnessError(f"{kernel.label} is not a variant of the running kernel {self.kernel.label}")
        assert self.spec is not None and self.spec.module_share is not None
        # Never the management NIC's driver: ssh runs through it, and it is no NIC under test.
        mgmt = nic(management_model(self.spec.nics)).module
        swapped = [m for m, f in kernel.module_files.items()
                   if self._loaded.get(m) != f and m in self.spec.modules and m != mgmt]
        for module in swapped:
            rel = f"variants/{kernel.key}/{module}.ko"
            _link_or_copy(kernel.module_files[module], self.spec.module_share / rel)
            self.run(f"rmmod {module} && insmod /lib/modules/{rel}")
            self._loaded[module] = kernel.module_files[module]
        self.kernel = kernel
        if swapped:
            self.rescan_nics()
            reloaded = [n.name for n in self.nics if n.driver in swapped]
            if reloaded:
                self.run(" && ".join(f"ip link set dev {name} up" for name in reloaded))
        return swapped

    def rescan_nics(self) -> None:
        """The NICs as the guest has them now (after a driver was reloaded)."""
        out = self.run("for d in /sys/class/net/*; do [ -e $d/device/driver ] || continue; "
                       "echo ${d##*/}:$(basename $(readlink $d/device/driver)):$(cat $d/address); done").stdout
        assert self.console is not None
        self.console.nics = parse_ready_line(",".join(out.split()))
        self.facts.clear()

    def _check_behind_iommu(self) -> None:
        """With --iommu every NIC under test must be in an IOMMU group: a kernel
        without the Intel IOMMU driver boots fine and silently maps directly."""
        nics = self.nics_under_test()
        out = self.run(" ; ".join(f"readlink /sys/class/net/{n.name}/device/iommu_group || echo none"
                                  for n in nics), check=False).stdout.split()
        missing = [n.name for n, group in zip(nics, out, strict=False) if group == "none"]
        if missing or len(out) != len(nics):
            raise GuestError(f"--iommu: {', '.join(missing) or 'the NICs'} not behind the virtual IOMMU "
                             "(no iommu_group; is CONFIG_INTEL_IOMMU set in this kernel?)", self.console.last_lines())

    def _launch(self) -> float:
        assert self.spec is not None and self.workdir is not None
        self.argv = qemu_argv(self.spec, QEMU)
        started = time.monotonic()
        self.child = pexpect.spawn(self.argv[0], self.argv[1:], preexec_fn=_die_with_parent,
                                   echo=False, dimensions=(50, 200))
        self.console = ConsoleWatcher(self.child, self.console_log)
        self.console.start()
        self.qmp = QMP(self.spec.qmp_socket)
        try:
            self.qmp.connect(wait=10)
        except QMPError:
            self.qmp = None  # QEMU died at once; _fail_boot reports why
        return started

    def _lost_port_race(self) -> bool:
        return not self.alive() and any("host forwarding rule" in line
                                        for line in self.console.last_lines(10))

    def _fail_boot(self, started: float) -> None:
        assert self.console is not None
        waited = time.monotonic() - started
        if not self.alive():
            self._settle()  # QEMU's last words (stderr shares the pty) are still in flight
        if self.console.init_failure:
            why = f"guest init failed: {self.console.init_failure}"
        elif not self.alive():
            why = f"QEMU exited during boot after {waited:.1f}s ({self.exit_status()})"
        else:
            why = f"guest not ready after {waited:.0f}s (boot timeout; no HARNESS-READY line)"
        if self.console.crash_lines:
            why += "; kernel reported: " + self.console.crash_lines[0].strip()
        err_cls = GuestTimeout if self.alive() else GuestError
        tail = self.console.last_lines(40)
        self._kill()
        raise err_cls(f"{why}\n  qemu: {self.command_line}\n  console log: {self.console_log}", tail)

    def _settle(self, seconds: float = 3.0) -> None:
        """After the connection broke: if QEMU is dying, let it finish (exit status,
        last console output) so the error says what really happened."""
        if self.console is None:
            return
        if self.console.eof.wait(seconds):  # the pty closed: QEMU is gone or going
            deadline = time.monotonic() + seconds
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.child is not None and self.child.isalive()

    def exit_status(self) -> str:
        if self.child is None:
            return "not started"
        if self.child.isalive():
            return "running"
        if self.child.signalstatus is not None:
            return f"killed by signal {self.child.signalstatus}"
        return f"exit status {self.child.exitstatus}"

    def stop(self, grace: float = 5.0) -> None:
        """Quit QEMU (QMP quit, then SIGTERM, then SIGKILL to its process group)."""
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        if self.child is not None and self.child.isalive():
            if self.qmp is not None:
                with contextlib.suppress(Exception):
                    self.qmp.command("quit")
            deadline = time.monotonic() + grace
            while self.child.isalive() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._kill()
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.console is not None:
            self.console.join()
        if self._tmp is not None:
            # Keep the console log of a guest that crashed; drop the rest.
            if self.console is not None and self.console.crash_lines and not self.crash_expected:
                keep = Path(tempfile.mkdtemp(prefix="harness-console-"))
                with contextlib.suppress(OSError):
                    os.replace(self.console_log, keep / "console.log")
                    print(f"harness: console log kept at {keep / 'console.log'}", file=sys.stderr)
            self._tmp.cleanup()
            self._tmp = None

    def _kill(self) -> None:
        child = self.child
        if child is None:
            return
        if child.isalive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGTERM)
            deadline = time.monotonic() + 3
            while child.isalive() and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            child.close(force=True)
        self.exit_reason = self.exit_reason or self.exit_status()

    # ---- facts -----------------------------------------------------------
    @property
    def console_log(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "console.log"

    @property
    def trace_log(self) -> Path:
        """QEMU's log (-D): the lines of the trace events a device probe switches on."""
        assert self.workdir is not None
        return self.workdir / "qemu-trace.log"

    @property
    def cost_socket(self) -> Path:
        """The cost plugin's control socket (a guest started with GuestOptions.cost_plugin)."""
        assert self.workdir is not None
        return self.workdir / "cost.sock"

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    @property
    def nics(self) -> list[NicInfo]:
        assert self.console is not None and self.console.nics is not None
        return self.console.nics

    def nics_under_test(self) -> list[NicInfo]:
        """The guest's NICs of its --nics models (by the catalogue's MAC): never the
        management NIC, whatever its driver."""
        macs = {nic(m).mac for m in self.options.nics}
        return [n for n in self.nics if n.mac in macs]

    def nic(self, model: str) -> str:
        """The guest interface of the NIC `model` (e.g. "igb" -> "eth2"), found by the
        catalogue's MAC and checked to be bound to the catalogue's driver."""
        want = nic(model)
        found = [n for n in self.nics if n.mac == want.mac]
        have = ", ".join(f"{n.name}={n.driver}" for n in self.nics)
        if len(found) != 1:
            raise GuestError(f"no interface with {model}'s MAC {want.mac} in this guest ({have}); is {model} "
                             "in its --nics?")
        if found[0].driver != want.driver:
            raise GuestError(f"{model} ({found[0].name}, {want.mac}) is bound to {found[0].driver}, not "
                             f"{want.driver} ({have})")
        return found[0].name

    def console_tail(self, n: int = 30) -> list[str]:
        """The console lines an error shows: the last `n`, or, once the kernel has
        reported a crash, that report (with its call trace) and then the last few."""
        if self.console is None:
            return []
        report = self.console.reports_since(0, context=n)[:n]
        if not report:
            return self.console.last_lines(n)
        last = self.console.last_lines(8)
        return report + (["...", *last] if last and last[-1] not in report else [])

    # ---- commands --------------------------------------------------------
    def run(self, cmd: Sequence[str] | str, *, check: bool = True, timeout: float | None = None,
            stdin: bytes | None = None) -> CommandResult:
        """Run a command in the guest. A list is quoted for the remote shell; a
        string is a shell snippet. Raises GuestCommandError (with stderr and the
        console tail) on a non-zero exit when `check`."""
        line = cmd if isinstance(cmd, str) else shlex.join(cmd)
        if self.ssh is None:
            raise GuestError(f"guest is not running (cannot run: {line})", self.console_tail())
        limit = timeout or self.options.command_timeout
        try:
            result = self.ssh.run(line, limit, stdin)
        except CommandTimeout as e:
            raise GuestTimeout(f"{e}\n  stderr so far: {e.stderr.strip()[-500:]}", self.console_tail()) from e
        except HarnessError as e:
            self._settle()
            raise GuestError(f"{e} (qemu {self.exit_status()})", self.console_tail(40)) from e
        if check and result.rc != 0:
            raise GuestCommandError(line, result.rc, result.stdout, result.stderr, self.console_tail())
        return result

    def write_file(self, path: str, data: bytes | str) -> None:
        payload = data.encode() if isinstance(data, str) else data
        self.run(["sh", "-c", 'cat > "$1"', "sh", path], stdin=payload)

    def ssh_command(self) -> list[str]:
        """An OpenSSH command line that reaches this guest (for `harness shell`)."""
        assert self.spec is not None
        return ["ssh", "-i", str(self.image.ssh_key), "-p", str(self.spec.ssh_port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "root@127.0.0.1"]
