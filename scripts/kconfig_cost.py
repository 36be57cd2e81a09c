#!/usr/bin/env python3
"""What each Kconfig option costs a cold kernel build, in objects compiled: every
`CC` line of a cached kernel's build log attributed to the innermost option that
brings the object in, read from the kernel tree's own Kbuild files
(harness.artifacts.kconfig_cost). Where to trim the fragments, and what cannot go.

    scripts/kconfig_cost.py KERNEL_DIR SOURCE_TREE [--top 40]

KERNEL_DIR: a kernel in the cache (~/.cache/harness/kernels/<key>: its build.log);
SOURCE_TREE: the tree it was built from (~/.cache/harness/sources/<key>/linux-source-X.Y).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from harness.artifacts.kconfig_cost import compiled_objects, cost_by_option, render


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel_dir", type=Path)
    ap.add_argument("source", type=Path)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    log = args.kernel_dir / "build.log"
    if not log.is_file() or not (args.source / "Kbuild").is_file():
        print(f"need {log} and a kernel tree at {args.source} (its top-level Kbuild)", file=sys.stderr)
        return 2
    text = log.read_text(errors="replace")
    # The build directory as the log names it (kbuild prints absolute paths with O=).
    build_dir = m.group(1) if (m := re.search(r"^\s+CC\s+(/\S+?/)(?:init|kernel|tools)/", text, re.M)) else None
    objects = compiled_objects(text, build_dir)
    print(render(cost_by_option(args.source, objects), len(objects), args.top), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
