"""Which kernels a command runs on (--kernel, repeatable, and --kernel-tree)."""

from pathlib import Path

import pytest

from harness.artifacts.distro_kernel import newest_package
from harness.artifacts.kernel import DEFAULT_FRAGMENTS
from harness.artifacts.kernel_choice import KernelChoice, kernel_choices, single_choice
from harness.cli import _user_build, build_parser
from harness.errors import HarnessError


def test_default_is_the_source_build():
    assert kernel_choices(None, None) == [KernelChoice("source")]


def test_a_tree_alone_replaces_the_source_build(tmp_path):
    assert kernel_choices(None, tmp_path) == [KernelChoice("tree", tmp_path)]
    assert kernel_choices(None, tmp_path)[0].label == f"tree-{tmp_path.name}"


def test_matrix_in_order_without_duplicates(tmp_path):
    got = kernel_choices(["debian-6.1", "source", "debian", "debian-6.12"], tmp_path)
    assert [c.label for c in got] == ["debian-6.1", "source", "debian-6.12", f"tree-{tmp_path.name}"]
    assert [c.prebuilt for c in got] == [True, False, True, False]


def test_single_kernel_commands_refuse_a_matrix():
    with pytest.raises(HarnessError, match=r"harness boot takes one kernel \(got source, debian-6\.1\)"):
        single_choice(["source", "debian-6.1"], None, "boot")


def test_prebuilt_takes_no_patch(tmp_path):
    with pytest.raises(HarnessError, match="prebuilt image: it has no variants and takes no --fragment or --patch"):
        KernelChoice("debian-6.1").get(cache=None, patches=(Path("x.patch"),))  # type: ignore[arg-type]
    with pytest.raises(HarnessError, match=r"prebuilt image: .* \(asked for the 'no-reuse' variant\)"):
        KernelChoice("debian-6.1").get(cache=None, variant="no-reuse")  # type: ignore[arg-type]
    with pytest.raises(HarnessError, match="--patch need a kernel that is built"):
        kernel_choices(["debian-6.1"], None, patches=(Path("x.patch"),))


def test_user_patches_and_fragments_go_to_every_built_kernel(tmp_path):
    mine = (Path("break-igb.patch"),)
    got = kernel_choices(["source", "debian-6.1"], tmp_path, ("base", "nics"), mine)
    assert [(c.label, c.fragments, c.patches) for c in got] == [
        ("source", ("base", "nics"), mine), ("debian-6.1", (), ()), (f"tree-{tmp_path.name}", ("base", "nics"), mine)]
    # a variant's patch comes after the user's; the user's fragments win over the variant's
    request = got[0].build_request(("base", "nics", "observe"), (Path("variant.patch"),), "no-reuse")
    assert request.patches == (*mine, Path("variant.patch")) and request.fragments == ("base", "nics")
    assert KernelChoice("source").build_request().fragments == DEFAULT_FRAGMENTS


def test_run_passes_patch_and_fragment_to_the_claims_kernel():
    args = build_parser().parse_args(["run", "--patch", "b.patch", "--fragment", "base", "--out", "o"])
    (choice,) = kernel_choices(args.kernel, args.kernel_tree, *_user_build(args))
    assert choice.patches == (Path("b.patch"),) and choice.fragments == ("base",)


def test_cli_parses_a_matrix_with_baseline_and_keep():
    args = build_parser().parse_args(["run", "--kernel", "source", "--kernel", "debian-6.1", "--baseline",
                                      "prev/", "--tolerance", "0.05", "--keep", "--out", "o"])
    assert args.kernel == ["source", "debian-6.1"] and args.baseline == Path("prev/") and args.keep
    assert args.tolerance == 0.05 and args.abs_tolerance == 0.02


APT_SEARCH = """linux-image-6.1.0-9-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-41-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-41-rt-amd64-unsigned - Linux 6.1 for 64-bit PCs, PREEMPT_RT
linux-image-6.1.0-41-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.12.38+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.117+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
"""


@pytest.mark.parametrize("series, want", [
    ("6.1", ("linux-image-6.1.0-41-amd64-unsigned", "6.1.0-41-amd64")),
    ("6.12", ("linux-image-6.12.117+deb12-amd64-unsigned", "6.12.117+deb12-amd64")),
])
def test_newest_debian_package_of_a_series(series, want):
    assert newest_package(series, apt_search=APT_SEARCH) == want


def test_no_package_of_the_series_names_the_suite():
    with pytest.raises(HarnessError, match=r"linux-image-6\.1\..*comes from bookworm;"):
        newest_package("6.1", apt_search="")
