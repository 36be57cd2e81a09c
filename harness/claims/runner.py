"""Run the chosen claims: every experiment they need once (grouped by guest, so
each kernel variant and DMA mode boots once), then the verdicts."""

from __future__ import annotations

import time

from harness.errors import HarnessError

from .barriers import Barriers
from .base import ClaimResult
from .cost_claims import RxCost
from .dma_claims import HalfPageSync, SkipCpuSync
from .doorbell_claims import RxTailBatching, TxBulking
from .experiments import EXPERIMENTS, GUEST_ORDER, run_experiment
from .lab import ERROR, Lab, log
from .pool_claims import PagePool
from .rx_claims import BuildSkbVsCopy, PageBasedRx, PagecntBias, PageReuse
from .skb_bulk_claims import SkbBulkAlloc, SkbBulkFree
from .xdp_claims import XdpOnPages
from .xsk_claims import XskZeroCopy

# The talk's eight claims (slides 5-10): what `harness run` checks by default.
CLAIMS = [PageBasedRx(), PageReuse(), HalfPageSync(), PagecntBias(), SkipCpuSync(), Barriers(), BuildSkbVsCopy(),
          XdpOnPages()]
CLAIM_IDS = [c.id for c in CLAIMS]
# The rest of the talk's agenda, checked when asked for (`--claims tx-bulking,xsk-zero-copy`, `--claims all`).
AGENDA_CLAIMS = [TxBulking(), RxTailBatching(), PagePool(), XskZeroCopy()]
ALL_CLAIMS = CLAIMS + AGENDA_CLAIMS
# On the cost guest (QEMU counting instructions): what the techniques save per frame, and
# the skb heads' bulk alloc and free. `--cost` (or `--claims rx-cost,...`); never part of
# the default run or of `all`.
COST_CLAIMS = [RxCost(), SkbBulkAlloc(), SkbBulkFree()]


def select(ids: list[str] | None, cost: bool = False) -> list:
    extra = list(COST_CLAIMS) if cost else []
    if not ids:
        return list(CLAIMS) + extra
    if ids == ["all"]:
        return list(ALL_CLAIMS) + extra
    known = [c.id for c in ALL_CLAIMS + COST_CLAIMS]
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise HarnessError(f"unknown claim id {', '.join(unknown)}; known: {', '.join(known)} (or all)")
    return [c for c in ALL_CLAIMS + COST_CLAIMS if c.id in ids or (cost and c in COST_CLAIMS)]


def nics_for(claims: list, nics: tuple[str, ...]) -> tuple[str, ...]:
    """The NICs of `--nics` and any a claim needs besides (page-pool: a vmxnet3)."""
    return tuple(dict.fromkeys((*nics, *(n for c in claims for n in getattr(c, "nics", ())))))


def experiment_order(claims: list) -> list[str]:
    needed = {e for c in claims for e in c.experiments}
    rank = {key: i for i, key in enumerate(GUEST_ORDER)}
    # A sampled experiment runs right after its base (the same receiver state, set up again).
    # The cost guest's experiments last (its guest is another boot).
    return sorted(needed, key=lambda e: (EXPERIMENTS[e].cost, rank[(EXPERIMENTS[e].variant, EXPERIMENTS[e].dma_mode)],
                                         EXPERIMENTS.rank(e), EXPERIMENTS[e].point.frame_size, e))


def skipped_work(claims: list) -> list[str]:
    """What a run of only these claims leaves out (kernel variants, guests, builds)."""
    from .lab import DMA_MODES, VARIANTS

    needed = {(EXPERIMENTS[e].variant, EXPERIMENTS[e].dma_mode) for e in experiment_order(claims)}
    out = [f"the {v} kernel variant (no claim asked needs it)" for v in VARIANTS if v not in {n[0] for n in needed}]
    out += [f"a {d}-DMA guest" for d in DMA_MODES if d not in {n[1] for n in needed}]
    if not any(c.id == "barriers" for c in claims):
        out.append("the arm64 cross build of igb_main.c (barriers only)")
    return out


def run_experiments(lab: Lab, claims: list) -> None:
    order = experiment_order(claims)
    skipped = skipped_work(claims)
    if skipped and len(claims) < len(ALL_CLAIMS):
        log("not needed for these claims, skipped: " + "; ".join(skipped))
    try:
        for i, name in enumerate(order, 1):
            exp = EXPERIMENTS[name]
            log(f"[{i}/{len(order)}] {name}: {exp.what} ({exp.variant} kernel, {exp.dma_mode} DMA)")
            run_experiment(lab, name)
    finally:
        lab.close()


def evaluate_claims(lab: Lab, claims: list) -> list[ClaimResult]:
    """The verdicts over what the lab measured (also over a partial run: what did
    not run is unmeasured)."""
    results = []
    for claim in claims:
        started = time.monotonic()
        result = claim.evaluate(lab)
        result.seconds = time.monotonic() - started + sum(
            lab.results[e].seconds for e in claim.experiments if e in lab.results)
        result.region = claim.region
        result.sampled = [sampled(e) for e in claim.experiments]
        failed = [lab.failures[e] for e in claim.experiments if e in lab.failures]
        result.errors += [f for f in failed if f.kind == ERROR]
        result.notes += [f"not measured: {f.headline}" for f in failed if f.kind != ERROR]
        results.append(result)
    return results


def sampled(name: str) -> dict:
    """An experiment a claim is judged on, with its traffic point and description."""
    exp = EXPERIMENTS[name]
    return {"experiment": name, "point": exp.point.describe(), "what": exp.what}


def run_claims(lab: Lab, claims: list) -> list[ClaimResult]:
    run_experiments(lab, claims)
    return evaluate_claims(lab, claims)
