"""Evidence that a claim's sample covers its region: the lines and branches of the
driver functions the claim speaks of that its experiments executed, from a
`--coverage` run's gcov counts (measurement/gcov.py, source/coverage.py). Which
functions a claim speaks of is data on the claim (`covers`: source file and root
functions, their static helpers found from the source); igb's rx loop and refill
by default."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.nics import nic
from harness.source.coverage import Counts, coverage_in, gcov_counts
from harness.source.rx_source import TX_NAMES, rx_functions

from .lab import Lab

IGB = nic("igb")
RX_PATH = ((f"{IGB.source_dir}/{IGB.rx_source}", IGB.rx_roots),)


def covers(claim: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return getattr(claim, "covers", RX_PATH)


def claim_coverage(lab: Lab, claims: list) -> dict[str, list[dict]]:
    """claim id -> per covered file: functions, lines and branches executed by the
    claim's experiments together (or why not measured)."""
    try:
        kernel = lab.kernel("stock")
    except HarnessError as e:
        return {c.id: [{"file": rel, "unmeasured": str(e).splitlines()[0]} for rel, _ in covers(c)] for c in claims}
    counts: dict[tuple[str, str], Counts] = {}  # (experiment, file) -> counts

    def of(experiment: str, rel: str) -> Counts | None:
        stem = rel.rsplit("/", 1)[-1].removesuffix(".c")
        data = lab.gcov.get(experiment, {}).get(stem)
        if data is None:
            return None
        if (experiment, rel) not in counts:
            counts[(experiment, rel)] = gcov_counts(kernel.source_file(rel.removesuffix(".c") + ".gcno"), data)
        return counts[(experiment, rel)]

    out: dict[str, list[dict]] = {}
    for claim in claims:
        rows = []
        for rel, roots in covers(claim):
            try:
                # the functions the roots call: a tx root's helpers are tx's, an rx root's leave tx out
                tx = any(TX_NAMES.search(r) for r in roots)
                ranges = rx_functions(kernel.source_file(rel).read_text(), roots, leave_out=None if tx else TX_NAMES)
                total, seen = Counts(), []
                for e in claim.experiments:
                    if (c := of(e, rel)) is not None:
                        total += c
                        seen.append(e)
            except HarnessError as err:
                rows.append({"file": rel, "unmeasured": str(err).splitlines()[0]})
                continue
            if not ranges:
                rows.append({"file": rel, "unmeasured": f"none of {', '.join(roots)} in {rel} of this kernel"})
            elif not seen:
                rows.append({"file": rel, "unmeasured": "no gcov counts from the claim's experiments"})
            else:
                rows.append({"file": rel, "experiments": seen, **coverage_in(total, ranges)})
        out[claim.id] = rows
    return out
