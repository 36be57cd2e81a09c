"""Which kernels a command runs on: `--kernel KIND` (repeatable) and `--kernel-tree PATH`.

KINDs: `source` (Debian's linux-source-6.12 built with the fragments),
`source-latest` (the newest linux-source-X.Y of Debian's newer suites, built the
same way), `debian` / `debian-6.12` (Debian's prebuilt 6.12 from
bookworm-backports), `debian-6.1` (bookworm's prebuilt 6.1), `debian-latest` (the
newest prebuilt image of that newest series, with its -dbg DWARF and source).
A tree given without `--kernel` replaces `source`; given with it, it is one more
kernel of the matrix. So does `--kernel-artifact FILE`, a kernel another job built
and exported (harness.artifacts.kernel_export), under the label it was built as."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts.kernel import Kernel, KernelRequest, get_kernel
from harness.cache import Cache
from harness.errors import HarnessError

KINDS = ("source", "source-latest", "debian", "debian-6.12", "debian-6.1", "debian-latest")
PREBUILT_SERIES = {"debian": "6.12", "debian-6.12": "6.12", "debian-6.1": "6.1", "debian-latest": "latest"}


@dataclass(frozen=True)
class KernelChoice:
    kind: str  # source | tree | artifact | debian-6.12 | debian-6.1
    tree: Path | None = None
    # The user's --fragment and --patch (built kernels only): they replace the default
    # fragments and come before a variant's own patches.
    fragments: tuple[str, ...] = ()
    patches: tuple[Path, ...] = ()
    artifact: Path | None = None  # kind "artifact": an exported kernel (harness kernel --export)

    @property
    def label(self) -> str:
        """A short name for directories and report columns (an imported kernel keeps the
        label it was built as: its shards merge with the runs of the same kernel)."""
        if self.artifact is not None:
            return artifact_label(self.artifact)
        return f"tree-{self.tree.name}" if self.tree is not None else self.kind

    @property
    def prebuilt(self) -> bool:
        return self.kind in PREBUILT_SERIES

    def prebuilt_kernel(self, cache: Cache) -> Kernel:
        from harness.artifacts.distro_kernel import get_debian_kernel

        return get_debian_kernel(cache, PREBUILT_SERIES[self.kind])

    def build_request(self, fragments: tuple[str, ...] = (), patches: tuple[Path, ...] = (),
                      variant: str = "stock", tarball: Path | None = None) -> KernelRequest:
        """This choice's build: the user's fragments (else `fragments`, else the defaults),
        the user's patches then `patches` (a variant's)."""
        return KernelRequest(tree=self.tree, tarball=tarball,
                             fragments=self.fragments or fragments or KernelRequest().fragments,
                             patches=self.patches + patches, variant=variant)

    def get(self, cache: Cache, patches: tuple[Path, ...] = (), variant: str = "stock",
            fragments: tuple[str, ...] = ()) -> Kernel:
        """This choice's kernel; `variant` with its `patches` and `fragments` is a build
        of it, which a prebuilt image cannot be (the one place that says so)."""
        if self.artifact is not None:
            return self.imported_kernel(cache, patches, variant, fragments)
        if self.prebuilt:
            if self.fragments or self.patches or patches or variant != "stock":
                wanted = f" (asked for the {variant!r} variant)" if variant != "stock" else ""
                raise HarnessError(f"--kernel {self.kind} is Debian's prebuilt image: it has no variants and "
                                   f"takes no --fragment or --patch{wanted}")
            return self.prebuilt_kernel(cache)
        tarball = None
        if self.kind == "source-latest":
            from harness.artifacts.latest_kernel import latest_source

            tarball = latest_source(cache).tarball
        return get_kernel(self.build_request(fragments, patches, variant, tarball), cache)

    def imported_kernel(self, cache: Cache, patches: tuple[Path, ...], variant: str,
                        fragments: tuple[str, ...] = ()) -> Kernel:
        """The exported kernel, and a variant of it (or a --patch) as its driver modules
        rebuilt here: a patch outside the NIC driver directories, or a variant's fragment
        the export was not built with, would need the full build the export exists to avoid."""
        from harness.artifacts.kernel import kernel_of_base, split_patches
        from harness.artifacts.kernel_export import import_kernel
        from harness.artifacts.source_tree import check_patch
        from harness.nics import module_dirs

        base = import_kernel(self.artifact, cache)  # type: ignore[arg-type]
        missing = [f for f in fragments if f not in base.meta.get("fragments", ())]
        if missing:
            raise HarnessError(f"--kernel-artifact {self.artifact}: the {variant!r} variant needs fragment(s) "
                               f"{', '.join(missing)}, which the export was not built with "
                               f"({', '.join(base.meta.get('fragments', ()))}): export a kernel built with them")
        wanted = [check_patch(p) for p in (*self.patches, *patches)]
        outside, per_module = split_patches(wanted, module_dirs())
        if outside:
            raise HarnessError(f"--kernel-artifact {self.artifact}: {', '.join(p.name for p in outside)} patches "
                               "outside the NIC driver directories: that needs a full build (--kernel source "
                               "--patch ...), not an imported kernel")
        request = KernelRequest(fragments=tuple(base.meta.get("fragments", ())), patches=tuple(wanted),
                                variant=variant)
        return kernel_of_base(base, request, per_module, cache)


@functools.lru_cache(maxsize=8)
def artifact_label(archive: Path) -> str:
    from harness.artifacts.kernel_export import read_info

    return read_info(archive)["label"]


def kernel_choices(kinds: list[str] | None, tree: Path | None, fragments: tuple[str, ...] = (),
                   patches: tuple[Path, ...] = (), artifact: Path | None = None) -> list[KernelChoice]:
    """The kernels asked for, in order, without duplicates (`debian` = `debian-6.12`);
    `fragments` and `patches` go to every kernel that is built (an imported kernel
    takes the patches, as driver modules rebuilt, never fragments)."""
    choices: list[KernelChoice] = []
    if artifact is not None and fragments:
        raise HarnessError(f"--kernel-artifact {artifact} is built already: its config is the export's, "
                           f"--fragment {','.join(fragments)} cannot change it")
    for kind in kinds or ([] if tree is not None or artifact is not None else ["source"]):
        if kind not in KINDS:
            raise HarnessError(f"unknown --kernel {kind!r}; known: {', '.join(KINDS)}")
        choice = KernelChoice("debian-6.12" if kind == "debian" else kind)
        if not choice.prebuilt:
            choice = KernelChoice(choice.kind, fragments=fragments, patches=patches)
        if choice not in choices:
            choices.append(choice)
    if tree is not None:
        choices.append(KernelChoice("tree", tree, fragments, patches))
    if artifact is not None:
        choices.append(KernelChoice("artifact", patches=patches, artifact=artifact.resolve()))
    if (fragments or patches) and all(c.prebuilt for c in choices):
        raise HarnessError(f"--fragment and --patch need a kernel that is built (--kernel source or "
                           f"--kernel-tree); {', '.join(c.kind for c in choices)} is Debian's prebuilt image")
    return choices


def single_choice(kinds: list[str] | None, tree: Path | None, command: str, fragments: tuple[str, ...] = (),
                  patches: tuple[Path, ...] = (), artifact: Path | None = None) -> KernelChoice:
    choices = kernel_choices(kinds, tree, fragments, patches, artifact)
    if len(choices) != 1:
        raise HarnessError(f"harness {command} takes one kernel (got {', '.join(c.label for c in choices)}); "
                           "only `harness run` and `harness kernel` take several")
    return choices[0]
