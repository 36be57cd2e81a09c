"""A kernel that does not build, from the build to main(): its type survives the lab
(git bisect skips it: 125; without --bisect a user error: 2), and a set-up error
under --bisect still stops the bisection (128)."""

from __future__ import annotations

import pytest

from harness import cli
from harness.artifacts.kernel_choice import KernelChoice
from harness.cache import Cache
from harness.claims.lab import Lab
from harness.errors import BuildError, ConfigFragmentError, HarnessError, KernelUnavailable, does_not_build


@pytest.fixture
def failing_kernel(monkeypatch, tmp_path):
    """Every kernel the lab asks for fails with `raised[0]`; nothing is built or booted."""
    raised: list[HarnessError] = []
    log = tmp_path / "kernel-build.log"
    log.write_text("igb_main.c:8912:9: error: expected ';' before 'return'\n")

    def get(self, cache, patches=(), variant="stock", fragments=()):
        raise raised[0]

    monkeypatch.setattr(KernelChoice, "get", get)
    monkeypatch.setattr(Lab, "prefetch_image", lambda self: None)
    monkeypatch.setattr(Lab, "prefetch_kernels", lambda self, variants: None)
    return raised, log


def run(tmp_path, *extra: str) -> int:
    return cli.main(["run", "--claims", "page-reuse", "--out", str(tmp_path / "out"), "--cache",
                     str(tmp_path / "cache"), *extra])


def test_a_kernel_that_does_not_build_is_skipped_by_bisect(failing_kernel, tmp_path, capsys):
    raised, log = failing_kernel
    raised.append(BuildError("kernel build (exit 2)", str(log), ["igb_main.c:8912:9: error: expected ';'"]))
    assert run(tmp_path, "--bisect") == cli.BISECT_SKIP == 125
    err = capsys.readouterr().err
    assert "kernel variant 'stock' unavailable: kernel build (exit 2) failed" in err
    assert f"full log: {log}" in err and "igb_main.c:8912:9: error:" in err
    assert run(tmp_path) == cli.EXIT_USER_ERROR == 2


def test_a_config_the_tree_cannot_satisfy_is_skipped_by_bisect(failing_kernel, tmp_path):
    raised, _ = failing_kernel
    raised.append(ConfigFragmentError("CONFIG_IGB=y (fragment nics.config line 3) ended up not set"))
    assert run(tmp_path, "--bisect") == 125


def test_a_set_up_error_stops_the_bisection(failing_kernel, tmp_path):
    raised, _ = failing_kernel
    raised.append(HarnessError("no /usr/src/linux-source-6.12 tarball"))
    assert run(tmp_path, "--bisect") == cli.BISECT_ABORT == 128


def test_the_lab_keeps_the_failures_type_every_time_it_is_asked(failing_kernel, tmp_path):
    raised, log = failing_kernel
    raised.append(BuildError("kernel build (exit 2)", str(log), []))
    lab = Lab(Cache(tmp_path), "unit")
    for _ in range(2):  # the second time from the lab's memory, not a second build
        with pytest.raises(KernelUnavailable) as e:
            lab.kernel("stock")
        assert does_not_build(e.value) and isinstance(e.value.cause, BuildError)
