"""The cost probe's pure parts: the plugin's dump, kallsyms, attribution to regions,
functions and families, and the A/B rule over recorded per-frame figures."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.measurement.cost import (
    METRIC,
    attribute,
    family_of,
    observations,
    parse_dump,
    parse_kallsyms,
)
from harness.nics import nic

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81100000 T napi_build_skb
ffffffff81100200 t __napi_build_skb
ffffffff81200000 T dma_sync_single_for_cpu
ffffffff81300000 T __alloc_pages_noprof
ffffffff81400000 T net_rx_action
ffffffff81500000 d some_data
ffffffffc0000000 t igb_poll\t[igb]
ffffffffc0000400 t igb_clean_tx_irq\t[igb]
ffffffffc0000800 t igb_clean_rx_irq\t[igb]
ffffffffc0100000 t e1000_xmit_frame\t[e1000e]
"""

# Region 1: igb_poll (rx), 2: igb_clean_tx_irq (rx_tx_clean), 3: e1000_xmit_frame (tx).
DUMP = """\
harness-cost 3 vcpus 2 slots 40 max_slots 262144
region 1 ffffffffc0000000 10
region 2 ffffffffc0000400 10
region 3 ffffffffc0100000 10
region 4 ffffffff81600000 125
returned 1 0 0 3 90
returned 1 0 1 6 5400
returned 1 0 2 1 1200
returned 4 1 16 125 37500
argument 4 1 16 125
lost 0
vcpu 0 depth 0
tb 0 0 5000 0 0 0 0 0 0 0
tb ffffffffc0000000 12 0 120 0 0 0 0 0 0
tb ffffffffc0000410 8 0 0 80 0 0 0 0 0
tb ffffffffc0000820 30 0 3000 0 0 0 0 0 0
tb ffffffff81100210 20 0 2000 0 0 0 0 0 0
tb ffffffff81200000 5 0 500 0 0 0 0 0 0
tb ffffffff81300010 40 400 0 0 0 0 0 0 0
tb ffffffffc0100000 25 0 0 0 2500 0 0 0 0
tb ffffffff81400000 10 100 0 0 0 0 0 0 0
"""

ROLES = {1: "rx", 2: "rx_tx_clean", 3: "tx"}
DRIVERS = {"igb": "driver igb", "e1000e": "driver e1000e"}


def test_dump_parses_regions_and_blocks():
    w = parse_dump(DUMP)
    assert w.regions[1] == (0xFFFFFFFFC0000000, 10)
    assert len(w.blocks) == 9
    assert w.total() == 5000 + 120 + 80 + 3000 + 2000 + 500 + 400 + 2500 + 100


def test_a_dump_of_another_format_is_refused():
    with pytest.raises(HarnessError, match="unknown format"):
        parse_dump("harness-cost 1 vcpus 2\n")


def test_kallsyms_keeps_text_symbols_with_their_module():
    syms = parse_kallsyms(KALLSYMS)
    assert syms.at(0xFFFFFFFFC0000830) == ("igb_clean_rx_irq", "igb")
    assert syms.at(0xFFFFFFFF81100210) == ("__napi_build_skb", "")
    assert syms.address("igb_poll", "igb") == 0xFFFFFFFFC0000000
    assert syms.address("some_data") is None  # data is not text


def test_kallsyms_without_addresses_is_an_error():
    with pytest.raises(HarnessError, match="kptr_restrict"):
        parse_kallsyms("0000000000000000 T _stext\n")


def test_instructions_go_to_the_innermost_region_and_the_rest_outside():
    b = attribute(parse_dump(DUMP), parse_kallsyms(KALLSYMS), ROLES, DRIVERS)
    rx = b.roles["rx"]
    assert rx.instructions == 120 + 3000 + 2000 + 500
    assert rx.entries == 10
    assert rx.functions["igb_clean_rx_irq [igb]"] == 3000
    assert rx.families == {"driver igb": 3120, "skb": 2000, "dma api": 500}
    assert b.roles["rx_tx_clean"].instructions == 80  # not in rx
    assert b.roles["tx"].functions == {"e1000_xmit_frame [e1000e]": 2500}
    assert b.outside == 5000 + 400 + 100  # user space, and kernel code in no region
    assert b.guest_total == sum(r.instructions for r in b.roles.values()) + b.outside


def test_observations_name_the_witness_and_list_functions_above_the_share():
    b = attribute(parse_dump(DUMP), parse_kallsyms(KALLSYMS), ROLES, DRIVERS)
    obs = {(o.metric, o.driver): o for o in observations(b, nic("igb"), nic("e1000e"), [])}
    assert obs[(f"{METRIC}:rx", "igb")].value == 5620
    assert obs[(f"{METRIC}:rx:fn:igb_clean_rx_irq [igb]", "igb")].value == 3000
    assert obs[(f"{METRIC}:rx:family:skb", "igb")].value == 2000
    assert obs[("entries:rx", "igb")].value == 10
    assert obs[(f"{METRIC}:tx", "e1000e")].value == 2500
    assert obs[(f"{METRIC}:guest", "")].value == parse_dump(DUMP).total()
    assert "tcg-plugin" in METRIC
    # polls by what they returned (frames received): 6 of one frame, 1 of two, 3 of none
    assert obs[("instances:rx:one", "igb")].value == 6 and obs[(f"{METRIC}:rx:one", "igb")].value == 5400
    assert obs[("instances:rx:several", "igb")].value == 1
    assert obs[(f"{METRIC}:rx:none", "igb")].value == 90
    assert obs[("returned:rx", "igb")].value == 8



def test_one_frame_polls_that_rescheduled_their_napi_are_counted_apart():
    """A poll whose NAPI was scheduled again (marked by the plugin) is not the compared
    one-frame figure: it ran the reschedule on top of the frame's work."""
    dump = DUMP.replace("returned 1 0 1 6 5400\n", "returned 1 0 1 6 5400\nmarked 1 0 1 2 1850\n")
    b = attribute(parse_dump(dump), parse_kallsyms(KALLSYMS), ROLES, DRIVERS)
    obs = {(o.metric, o.driver): o for o in observations(b, nic("igb"), nic("e1000e"), [])}
    assert obs[("instances:rx:one", "igb")].value == 4 and obs[(f"{METRIC}:rx:one", "igb")].value == 3550
    assert obs[("instances:rx:one-rescheduled", "igb")].value == 2
    assert obs[(f"{METRIC}:rx:one-rescheduled", "igb")].value == 1850
    assert obs[("returned:rx", "igb")].value == 8  # every poll's frames, marked or not


def test_the_reschedule_probe_marks_and_records_no_argument():
    from harness.measurement.cost import probe_observations

    dump = DUMP.replace("argument 4 1 16 125\n", "returned 5 1 0 40 960\nargument 5 1 65 40\n"
                        "argument 4 1 16 125\n")
    obs = {o.metric for o in probe_observations(parse_dump(dump), {4: "kmem_cache_alloc_bulk_noprof",
                                                                    5: "__napi_schedule"},
                                                ROLES, nic("igb"), nic("e1000e"))}
    assert "calls/tcg-plugin:__napi_schedule:under:rx" in obs
    assert "argument/tcg-plugin:__napi_schedule:under:rx" not in obs  # a pointer: nothing to sum

def test_a_probed_function_is_counted_by_the_region_it_was_called_from():
    from harness.measurement.cost import probe_observations

    obs = {(o.metric, o.driver): o for o in probe_observations(parse_dump(DUMP), {4: "kmem_cache_alloc_bulk_noprof"},
                                                                ROLES, nic("igb"), nic("e1000e"))}
    fn = "kmem_cache_alloc_bulk_noprof:under:rx"
    assert obs[(f"calls/tcg-plugin:{fn}", "igb")].value == 125
    assert obs[(f"returned/tcg-plugin:{fn}", "igb")].value == 125 * 16  # 16 heads a call
    assert obs[(f"argument/tcg-plugin:{fn}", "igb")].value == 125 * 16
    assert obs[(f"{METRIC}:{fn}", "igb")].value == 37500


@pytest.mark.parametrize(("name", "module", "family"), [
    ("igb_clean_rx_irq", "igb", "driver igb"),
    ("__alloc_pages_noprof", "", "page allocator"),
    ("kmem_cache_alloc_bulk_noprof", "", "slab"),
    ("dma_sync_single_for_cpu", "", "dma api"),
    ("swiotlb_tbl_sync_single", "", "dma api"),
    ("napi_build_skb", "", "skb"),
    ("bpf_prog_run_xdp", "", "xdp/bpf"),
    ("page_pool_alloc_pages", "", "page_pool"),
    ("netif_receive_skb_list_internal", "", "stack"),
    ("napi_gro_receive", "", "stack"),
    ("kfree_skb_reason", "", "skb"),
    ("__napi_alloc_skb", "", "skb"),
    ("skb_release_data", "", "skb"),
    ("ip_rcv_core", "", "stack"),
    ("__sysvec_apic_timer_interrupt", "", "irq/timer/sched"),
    ("memcpy_orig", "", "kernel"),
])
def test_families(name, module, family):
    assert family_of(name, module, DRIVERS) == family


# ---- rx-cost's rule on recorded per-experiment figures --------------------------------
def fake_lab(figures: dict[str, dict[str, float]], frames: int = 2000):
    """A lab whose experiments measured `figures` ({experiment: {metric: value}}, all of
    igb's except the e1000e experiment's)."""
    from types import SimpleNamespace

    import pandas as pd

    from harness.measurement.measure import Measurement

    results = {}
    for exp, metrics in figures.items():
        driver = "e1000e" if exp.startswith("e1000e") else "igb"
        frame = pd.DataFrame([{"metric": k, "driver": driver, "value": v, "detail": ""} for k, v in metrics.items()])
        results[exp] = Measurement(SimpleNamespace(received=frames), frame, 1.0)
    return SimpleNamespace(results=results, failures={})


def one_frame_polls(insns_per_poll: float, polls: int = 1500) -> dict[str, float]:
    return {f"{METRIC}:rx:one": insns_per_poll * polls, "instances:rx:one": polls}


def test_a_saving_holds_beyond_the_spread_and_fails_with_the_wrong_sign():
    from harness.claims.cost_claims import SAVINGS, saving_check

    reuse = next(s for s in SAVINGS if s.id == "reuse-saves")
    lab = fake_lab({"rx-cost": one_frame_polls(3400), "rx-cost-no-reuse": one_frame_polls(4300)})
    check, text = saving_check(lab, reuse)
    assert check.holds() is True and abs(check.value - 900 / 4300) < 1e-9
    assert "3400 vs 4300" in text
    lab = fake_lab({"rx-cost": one_frame_polls(4400), "rx-cost-no-reuse": one_frame_polls(4300)})
    assert saving_check(lab, reuse)[0].holds() is False  # reuse made it dearer: refuted
    lab = fake_lab({"rx-cost": one_frame_polls(4290), "rx-cost-no-reuse": one_frame_polls(4300)})
    check, _ = saving_check(lab, reuse)
    assert check.holds() is None and "spread" in check.unmeasured  # 0.2 %: cannot be told


def test_a_saving_needs_frames_in_polls_of_their_own():
    from harness.claims.cost_claims import SAVINGS, saving_check

    reuse = next(s for s in SAVINGS if s.id == "reuse-saves")
    lab = fake_lab({"rx-cost": one_frame_polls(3400, polls=100), "rx-cost-no-reuse": one_frame_polls(4300)})
    check, _ = saving_check(lab, reuse)
    assert check.holds() is None and "regime" in check.unmeasured
    lab = fake_lab({"rx-cost-no-reuse": one_frame_polls(4300)})
    assert saving_check(lab, reuse)[0].holds() is None  # an experiment not run: never passes


def test_cost_metrics_have_their_own_tolerance_in_compare():
    from harness.report.compare import compare_results

    def run(v: float) -> dict:
        return {"claims": [{"id": "rx-cost", "verdict": "confirmed",
                            "metrics": {f"rx-cost/{METRIC}:rx:fn:igb_poll [igb]/igb": v, "reuse-saves": 0.2}}]}

    changes = compare_results(run(476.0), run(484.0)).changes  # +1.7 %: inside the counts' 2 %, not the cost's 1 %
    assert [c.metric for c in changes if c.is_regression] == [f"rx-cost/{METRIC}:rx:fn:igb_poll [igb]/igb"]
    assert compare_results(run(476.0), run(479.0)).ok  # +0.6 %


def test_a_built_in_drivers_functions_are_told_by_its_source_file():
    from harness.measurement.cost import defined_functions

    src = ("static int virtnet_poll(struct napi_struct *napi, int budget)\n{\n\tif (x(y))\n\t\treturn 0;\n}\n"
           "static netdev_tx_t start_xmit(struct sk_buff *skb,\n\t\t\t      struct net_device *dev)\n{\n}\n"
           "static void free_old_xmit(struct send_queue *sq);\n")
    names = defined_functions(src)
    assert {"virtnet_poll", "start_xmit"} <= names
    assert "free_old_xmit" not in names and "x" not in names  # a declaration, a call
    assert family_of("virtnet_poll", "", {}, {"virtnet_poll": "driver virtio-net"}) == "driver virtio-net"
    assert family_of("virtnet_poll", "", {}) == "kernel"


def test_the_survey_has_cost_rows_only_when_it_measured_them():
    from harness.survey.techniques import COST_TECHNIQUES, TECHNIQUES, Cell, SurveyResult

    plain = SurveyResult({}, ("igb",), {"igb": {t.id: Cell(1.0) for t in TECHNIQUES}})
    assert plain.techniques == TECHNIQUES
    cost = SurveyResult({}, ("igb",), {"igb": {t.id: Cell(1.0) for t in TECHNIQUES + COST_TECHNIQUES}})
    assert cost.techniques == TECHNIQUES + COST_TECHNIQUES
    assert any(t["id"] == "cost-rx" for t in cost.to_json()["techniques"])


def test_a_bulk_function_the_kernel_lacks_is_unmeasured_not_zero():
    from harness.claims.skb_bulk_claims import SkbBulkAlloc

    lab = fake_lab({"rx-cost": {"calls/tcg-plugin:kmem_cache_alloc_bulk_noprof:under:rx": float("nan")},
                    "rx-cost@1514B+csum": {"instances:rx:one": 0.0}})
    checks = {c.id: c for c in SkbBulkAlloc().evaluate(lab).checks}
    assert checks["heads-alloc-in-bulk-per-frame"].holds() is None  # no such function: not a measured 0
    assert checks["heads-alloc-in-bulk-per-frame@1514B+csum"].holds() is False  # probed, never called: 0


def test_baseline_figures_take_a_one_frame_poll_per_poll_and_leave_timing_kinds_out():
    # How many polls were batched, empty or rescheduled is the host's timing: a baseline held
    # to 1 % must not compare those, and the one-frame kind per frame would move with them.
    from harness.claims.cost_claims import figures

    lab = fake_lab({"rx-cost": {**one_frame_polls(3750, polls=1900), f"{METRIC}:rx": 2000 * 3900,
                                f"{METRIC}:rx:one-rescheduled": 100 * 3800, "instances:rx:one-rescheduled": 100,
                                f"{METRIC}:rx:none": 2000 * 200}})
    got = figures(lab, ("rx-cost",))
    assert got[f"rx-cost/{METRIC}:rx:one/igb"] == 3750
    assert got[f"rx-cost/{METRIC}:rx/igb"] == 3900
    assert not any(k.endswith((":one-rescheduled/igb", ":none/igb")) for k in got)


def test_without_the_marking_function_rescheduled_polls_are_said_not_told_apart():
    b = attribute(parse_dump(DUMP), parse_kallsyms(KALLSYMS), ROLES, DRIVERS)
    obs = {(o.metric, o.driver): o for o in observations(b, nic("igb"), nic("e1000e"), [], ["__napi_schedule"])}
    one = obs[(f"{METRIC}:rx:one", "igb")]
    assert one.value == 5400 and "not told apart" in one.method
    assert obs[("instances:rx:one-rescheduled", "igb")].value != obs[("instances:rx:one-rescheduled", "igb")].value


def test_pinned_interrupts_are_found_in_sysfs_and_none_found_fails():
    from harness.measurement.irq_affinity import irqs_script

    script = irqs_script("0000:00:06.0", "2")
    assert "/sys/bus/pci/devices/0000:00:06.0/msi_irqs" in script and "/sys/bus/pci/devices/0000:00:06.0/irq" in script
    assert "exit 1" in script and "/proc/irq/$irq/smp_affinity" in script
