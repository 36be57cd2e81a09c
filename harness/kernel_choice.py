"""Which kernels a command runs on: `--kernel KIND` (repeatable) and `--kernel-tree PATH`.

KINDs: `source` (Debian's linux-source-6.12 built with the fragments), `debian` /
`debian-6.12` (Debian's prebuilt 6.12 from bookworm-backports), `debian-6.1`
(bookworm's prebuilt 6.1). A tree given without `--kernel` replaces `source`;
given with it, it is one more kernel of the matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cache import Cache
from .errors import HarnessError
from .kernel import Kernel, KernelRequest, get_kernel

KINDS = ("source", "debian", "debian-6.12", "debian-6.1")
PREBUILT_SERIES = {"debian": "6.12", "debian-6.12": "6.12", "debian-6.1": "6.1"}


@dataclass(frozen=True)
class KernelChoice:
    kind: str  # source | tree | debian-6.12 | debian-6.1
    tree: Path | None = None

    @property
    def label(self) -> str:
        """A short name for directories and report columns."""
        return f"tree-{self.tree.name}" if self.tree is not None else self.kind

    @property
    def prebuilt(self) -> bool:
        return self.kind in PREBUILT_SERIES

    def prebuilt_kernel(self, cache: Cache) -> Kernel:
        from .distro_kernel import get_debian_kernel

        return get_debian_kernel(cache, PREBUILT_SERIES[self.kind])

    def build_request(self, fragments: tuple[str, ...] | None = None, patches: tuple[Path, ...] = (),
                      variant: str = "stock") -> KernelRequest:
        return KernelRequest(tree=self.tree, fragments=fragments or KernelRequest().fragments,
                             patches=patches, variant=variant)

    def get(self, cache: Cache, fragments: tuple[str, ...] | None = None, patches: tuple[Path, ...] = ()) -> Kernel:
        if self.prebuilt:
            if fragments or patches:
                raise HarnessError(f"--kernel {self.kind} is Debian's prebuilt image: it takes no --fragment "
                                   "or --patch")
            return self.prebuilt_kernel(cache)
        return get_kernel(self.build_request(fragments, patches), cache)


def kernel_choices(kinds: list[str] | None, tree: Path | None) -> list[KernelChoice]:
    """The kernels asked for, in order, without duplicates (`debian` = `debian-6.12`)."""
    choices: list[KernelChoice] = []
    for kind in kinds or ([] if tree is not None else ["source"]):
        if kind not in KINDS:
            raise HarnessError(f"unknown --kernel {kind!r}; known: {', '.join(KINDS)}")
        choice = KernelChoice("debian-6.12" if kind == "debian" else kind)
        if choice not in choices:
            choices.append(choice)
    if tree is not None:
        choices.append(KernelChoice("tree", tree))
    return choices


def single_choice(kinds: list[str] | None, tree: Path | None, command: str) -> KernelChoice:
    choices = kernel_choices(kinds, tree)
    if len(choices) != 1:
        raise HarnessError(f"harness {command} takes one kernel (got {', '.join(c.label for c in choices)}); "
                           "only `harness run` and `harness kernel` take several")
    return choices[0]
