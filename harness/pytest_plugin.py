"""pytest plugin: `--kernel`, `--kernel-tree`, `--accel`; marker `vm`; a
session-scoped `guest` shared by many tests and a `fresh_guest` factory for tests
that need their own. A kernel crash report on the console fails the test that
was running, even if its own assertions passed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.artifacts.image import GuestImage, build_image
from harness.artifacts.kernel import Kernel
from harness.artifacts.kernel_choice import KINDS, KernelChoice, single_choice
from harness.cache import Cache
from harness.guest.vm import Guest, GuestOptions


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("harness", "QEMU real-kernel harness")
    g.addoption("--kernel", choices=KINDS, default=None,
                help="kernel for VM tests: source builds linux-source-6.12 (default); debian[-6.12], "
                     "debian-6.1: Debian's prebuilt")
    g.addoption("--kernel-tree", type=Path, default=None, help="build this kernel tree for VM tests")
    g.addoption("--accel", choices=["auto", "kvm", "tcg"], default="auto", help="QEMU accelerator")
    g.addoption("--harness-cache", type=Path, default=None, help="artifact cache (default ~/.cache/harness)")
    g.addoption("--debug-kernel", action="store_true",
                help="also run the tests marked debug_kernel: the debug flavour (KASAN, lockdep, kmemleak, "
                     "page_owner, fault injection) with its breakers; builds that kernel (about 20 min cold)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots a real QEMU guest (slow)")
    config.addinivalue_line("markers", "debug_kernel: needs the debug flavour's kernel (run with --debug-kernel)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--debug-kernel"):
        return
    skip = pytest.mark.skip(reason="needs the debug kernel: pytest --debug-kernel (the nightly runs it)")
    for item in items:
        if "debug_kernel" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def harness_cache(pytestconfig: pytest.Config) -> Cache:
    return Cache(pytestconfig.getoption("--harness-cache"))


@pytest.fixture(scope="session")
def kernel_choice(pytestconfig: pytest.Config) -> KernelChoice:
    kind = pytestconfig.getoption("--kernel")
    return single_choice([kind] if kind else None, pytestconfig.getoption("--kernel-tree"), "pytest")


@pytest.fixture(scope="session")
def kernel(kernel_choice: KernelChoice, harness_cache: Cache) -> Kernel:
    return kernel_choice.get(harness_cache)


@pytest.fixture(scope="session")
def guest_image(harness_cache: Cache) -> GuestImage:
    return build_image(cache=harness_cache)


@pytest.fixture(scope="session")
def guest_options(pytestconfig: pytest.Config) -> GuestOptions:
    return GuestOptions(accel=pytestconfig.getoption("--accel"))


@pytest.fixture(scope="session")
def guest(kernel: Kernel, guest_image: GuestImage, guest_options: GuestOptions,
          harness_cache: Cache) -> Iterator[Guest]:
    """One booted guest shared by the session; tests must leave it as they found it."""
    with Guest(kernel, guest_image, guest_options, harness_cache) as g:
        yield g


@pytest.fixture
def fresh_guest(kernel: Kernel, guest_image: GuestImage, guest_options: GuestOptions,
                harness_cache: Cache) -> Iterator[Callable[..., Guest]]:
    """Factory: `fresh_guest(cmdline_extra=("swiotlb=force",))` boots a guest of
    the test's own, stopped when the test ends."""
    with contextlib.ExitStack() as stack:
        def boot(**overrides: object) -> Guest:
            opts = GuestOptions(**{**guest_options.__dict__, **overrides})
            g = stack.enter_context(Guest(kernel, guest_image, opts, harness_cache))
            _watched.append(g)
            return g

        _watched: list[Guest] = []
        yield boot
        for g in _watched:
            _fail_on_crash(g, 0)


def _fail_on_crash(g: Guest, since_line: int) -> None:
    if g.console is None or g.crash_expected:
        return
    crashes = g.console.reports_since(since_line)
    if crashes:
        pytest.fail("kernel reported on the guest console:\n" + "\n".join(f"  | {c}" for c in crashes[:20])
                    + f"\n  console log: {g.console_log}", pytrace=False)


@pytest.fixture(autouse=True)
def _guest_crash_watch(request: pytest.FixtureRequest) -> Iterator[None]:
    """For tests using the shared `guest`: fail them on console crash reports."""
    if "guest" not in request.fixturenames:
        yield
        return
    g: Guest = request.getfixturevalue("guest")
    mark = g.console.line_count() if g.console else 0
    yield
    _fail_on_crash(g, mark)
