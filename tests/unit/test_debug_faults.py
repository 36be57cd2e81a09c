"""The debug flavour's parsers and rules on recorded output: kmemleak, page_owner's
stacks, fault injection's debugfs scripts and counts, the fault verdict."""

import re
from pathlib import Path

import pytest

from harness.cli import _user_build, build_parser
from harness.faults.inject import Injection, TextRange, dma_debug_text, text_range, text_symbols
from harness.faults.verdict import FAIL, PASS, UNMEASURED, judge
from harness.guest.console import is_crash_line
from harness.guest.crash import classify
from harness.guest.vm import Guest
from harness.measurement import leaks
from harness.measurement.leaks import (
    PAGE_LEAK_FLOOR,
    Drivers,
    LeakCheck,
    PageGrowth,
    first_driver_frame,
    page_growth,
    page_owner_of,
    parse_kmemleak,
    parse_page_stacks,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IGB = Drivers(frozenset({"igb", "e1000e"}))


def test_debug_adds_its_fragment_to_the_defaults_or_to_the_users():
    args = build_parser().parse_args(["run", "--debug"])
    assert _user_build(args)[0] == ("base", "nics", "observe", "debug-checks", "selftests", "debug")
    args = build_parser().parse_args(["run", "--debug", "--fragment", "base", "--fragment", "nics"])
    assert _user_build(args)[0] == ("base", "nics", "debug")
    assert _user_build(build_parser().parse_args(["run"]))[0] == ()


def test_faults_command_takes_nics_and_kernel():
    args = build_parser().parse_args(["faults", "--nics", "igb,e1000e", "--kernel", "source-latest"])
    assert args.func.__name__ == "cmd_faults" and args.kernel == ["source-latest"]


# ---- kmemleak ----------------------------------------------------------------------
def test_kmemleak_objects_and_their_driver():
    objs = parse_kmemleak((FIXTURES / "kmemleak_igb_slab_leak.txt").read_text())
    assert objs, "the recorded report holds objects"
    ours = [o for o in objs if first_driver_frame(o.backtrace, IGB)]
    assert ours and all(o.size == 64 for o in ours)
    driver, function = first_driver_frame(ours[0].backtrace, IGB)
    assert (driver, function) == ("igb", "igb_poll")
    assert all(not f.startswith("[<") for o in objs for f in o.backtrace)


def test_kmemleak_empty_report():
    assert parse_kmemleak("") == []


# ---- page_owner ------------------------------------------------------------------------
# Recorded on 6.12.95's debug flavour: igb's stacks in page_owner_stacks/show_stacks after
# 2000 frames (its ring pages from igb_alloc_rx_buffers, and the slab pages, vmalloc areas,
# DMA-API checker entries and kmemleak metadata allocated while igb ran), and three others.
STACKS = (FIXTURES / "page_owner_stacks_igb.txt").read_text()
REFILL = ("post_alloc_hook", "get_page_from_freelist", "__alloc_pages_noprof", "igb_alloc_rx_buffers [igb]")


def test_page_stacks_are_keyed_without_offsets():
    stacks = parse_page_stacks(STACKS)
    (refill,) = [n for stack, n in stacks.items() if stack[:len(REFILL)] == REFILL]
    assert refill == 510  # two rx rings of 255 pages (a page per buffer)
    assert sum(stacks.values()) > 510


def test_only_the_drivers_own_pages_count():
    """Slab pages, vmalloc areas and the DMA-API checker's entries allocated under igb are
    not igb's pages: only the refill's (the first frame past the page allocator is igb's)."""
    owned = {stack: n for stack, n in parse_page_stacks(STACKS).items() if page_owner_of(stack, IGB)}
    assert [stack[:len(REFILL)] for stack in owned] == [REFILL]


def with_refill(text: str, pages: int) -> str:
    return text.replace("nr_base_pages: 510", f"nr_base_pages: {pages}")


def test_page_growth_counts_driver_pages_that_stayed():
    leaky = STACKS + (" post_alloc_hook+0x274/0x348\n get_page_from_freelist+0xad4/0xdc2\n"
                      " __alloc_pages_noprof+0x155/0x2f3\n alloc_pages_mpol_noprof+0x10/0x80\n"
                      " igb_poll+0x3119/0x3abb [igb]\n __napi_poll.constprop.0+0x9e/0x2dd\nnr_base_pages: 1990\n\n")
    grown = page_growth(parse_page_stacks(STACKS), parse_page_stacks(with_refill(leaky, 500)), IGB)
    assert (grown[0].pages, grown[0].stack[-2]) == (1990, "igb_poll [igb]")
    check = LeakCheck(page_growth=grown)
    assert check.page_leak and check.leaked_pages == 1980
    (report,) = check.reports(IGB)
    assert report.kind == "page leak" and report.function == "igb_poll"
    assert "page leak@igb_poll" in report.fingerprint


def test_pages_moving_between_driver_stacks_are_no_leak():
    moved = with_refill(STACKS, 500) + (" post_alloc_hook+0x274/0x348\n get_page_from_freelist+0xad4/0xdc2\n"
                                         " __alloc_pages_noprof+0x155/0x2f3\n igb_poll+0x1/0x3abb [igb]\n"
                                         "nr_base_pages: 10\n\n")
    check = LeakCheck(page_growth=page_growth(parse_page_stacks(STACKS), parse_page_stacks(moved), IGB))
    assert check.leaked_pages == 0 and not check.page_leak


def test_ring_churn_below_the_floor_is_no_leak():
    after = with_refill(STACKS, 510 + PAGE_LEAK_FLOOR - 1)
    check = LeakCheck(page_growth=page_growth(parse_page_stacks(STACKS), parse_page_stacks(after), IGB))
    assert not check.page_leak and check.reports(IGB) == ()


class LeakGuest:
    """What leaks.read asks of a guest: kmemleak (nothing unreferenced), page_owner's
    stacks in turn, and the commands it ran."""

    def __init__(self, *readings: str) -> None:
        from harness.guest.console import NicInfo
        from harness.nics import MGMT_MAC, nic

        self.readings, self.commands = list(readings), []
        self.options = type("Options", (), {"nics": ("igb", "e1000e"), "cpus": 2})()
        self.nics = [NicInfo("eth0", "virtio_net", MGMT_MAC), NicInfo("eth1", "igb", nic("igb").mac),
                     NicInfo("eth2", "e1000e", nic("e1000e").mac)]
        self.facts: dict = {}

    nics_under_test = Guest.nics_under_test

    def run(self, cmd: str, timeout: float = 0, check: bool = True):
        self.commands.append(cmd)
        out = self.readings.pop(0) if "show_stacks" in cmd else ""
        return type("Result", (), {"stdout": out, "rc": 0})()


def test_growth_the_ring_holds_is_gone_after_the_rings_are_cycled():
    """e1000 refilled from order-0 pages while its order-3 ones failed: +77 pages live
    after the experiment, all freed when the ring was refilled (set down and up)."""
    g = LeakGuest(with_refill(STACKS, 510 + 77), STACKS)
    check = leaks.read(g, parse_page_stacks(STACKS), IGB)  # type: ignore[arg-type]
    assert check.grown_before_cycle == 77 and check.leaked_pages == 0 and check.reports(IGB) == ()
    (cycle,) = [c for c in g.commands if "down" in c]
    assert cycle == ("ip link set dev eth1 down && ip link set dev eth1 up && "
                     "ip link set dev eth2 down && ip link set dev eth2 up")  # never eth0, the management NIC


def test_a_leak_survives_the_ring_cycle():
    g = LeakGuest(with_refill(STACKS, 510 + 40), with_refill(STACKS, 510 + 40))
    check = leaks.read(g, parse_page_stacks(STACKS), IGB)  # type: ignore[arg-type]
    assert check.page_leak and check.grown_before_cycle == 40
    (report,) = check.reports(IGB)
    assert "+40 before the rings were cycled" in report.lines[0]


E1000_FRAG = ("post_alloc_hook", "__alloc_pages_noprof", "__page_frag_alloc_align", "__napi_alloc_frag_align",
              "e1000_alloc_frag.isra.0 [e1000]", "e1000_alloc_rx_buffers [e1000]")


def test_the_page_frag_caches_pages_are_allowed_only_to_page_frag_stacks():
    """Each per-CPU page-frag cache keeps one order-3 page (8 base pages) between refills:
    e1000 ended +16 after its ring was cycled on 2 vCPUs. igb's own pages get no such allowance."""
    held = LeakCheck(page_growth=[PageGrowth(E1000_FRAG, 16)], frag_allowance=32)
    assert held.leaked_pages == 0 and not held.page_leak
    leaking = LeakCheck(page_growth=[PageGrowth(E1000_FRAG, 48)], frag_allowance=32)
    assert leaking.leaked_pages == 16 and leaking.page_leak
    igb = LeakCheck(page_growth=[PageGrowth(REFILL, 16)], frag_allowance=32)
    assert igb.leaked_pages == 16 and igb.page_leak


def test_no_growth_reads_page_owner_once():
    g = LeakGuest(STACKS)
    check = leaks.read(g, parse_page_stacks(STACKS), IGB)  # type: ignore[arg-type]
    assert check.grown_before_cycle is None and not any("down" in c for c in g.commands)


def test_builtin_driver_frames_by_function():
    virtio = Drivers(builtin={"virtnet_poll": "virtio_net", "try_fill_recv": "virtio_net"})
    assert first_driver_frame(("__alloc_pages_noprof+0x1/0x2", "try_fill_recv+0x5/0x9"), virtio) == (
        "virtio_net", "try_fill_recv")
    assert first_driver_frame(("igb_poll+0x1/0x2 [igb]",), virtio) is None


# ---- fault injection ----------------------------------------------------------------------
KALLSYMS = """\
ffffffffc0200000 t igb_get_i2c_data\t[igb]
ffffffffc0212340 T igb_poll\t[igb]
ffffffffc0230000 t igb_remove\t[igb]
ffffffffc0230100 d igb_driver\t[igb]
ffffffff81000000 T _stext
"""


def test_module_text_range():
    r = text_range(text_symbols(KALLSYMS), module="igb")
    assert (r.start, r.end) == (0xFFFFFFFFC0200000, 0xFFFFFFFFC0230000 + 0x1000)


def test_module_text_range_from_a_guests_kallsyms():
    r = text_range(text_symbols((FIXTURES / "kallsyms_igb.txt").read_text()), module="igb")
    assert r.start == 0xFFFFFFFFA0220000 and r.end - r.start > 0x10000 and r.what == "module igb"


def test_hidden_addresses_are_an_error():
    with pytest.raises(ValueError, match="kptr_restrict"):
        text_range(text_symbols(re.sub(r"^[0-9a-f]{16}", "0" * 16, KALLSYMS, flags=re.M)), module="igb")


def test_page_injection_script_aims_at_the_text():
    inj = Injection("page", 128, 50, TextRange(0x1000, 0x2000, "module igb"))
    script = inj.arm_script()
    assert "echo 0x1000 > /sys/kernel/debug/fail_page_alloc/require-start" in script
    assert "echo 0x2000 > /sys/kernel/debug/fail_page_alloc/require-end" in script
    assert "echo 128 > /sys/kernel/debug/fail_page_alloc/times" in script
    assert script.rstrip().endswith("echo 50 > /sys/kernel/debug/fail_page_alloc/probability")
    assert "echo 0 > /sys/kernel/debug/fail_page_alloc/probability" in inj.disarm_script()
    assert inj.injected("61\n") == 67


def test_function_injection_names_the_function():
    inj = Injection("function", 10, function="page_pool_alloc_pages")
    assert "echo page_pool_alloc_pages > /sys/kernel/debug/fail_function/inject" in inj.arm_script()
    assert "require-start" not in inj.arm_script()


# ---- verdict ---------------------------------------------------------------------------------
GOOD = {"faults_injected:page": 128, "faults_injected:slab": 128, "faults_counted_by_driver": 201,
        "recovery_frames_sent": 500, "recovery_frames_received": 500, "dma_api_errors": 0,
        "leaked_driver_objects": 0, "leaked_driver_pages": 3}


def test_verdict_pass():
    assert judge("igb", GOOD).verdict == PASS


@pytest.mark.parametrize("change, reason", [
    ({"recovery_frames_received": 0}, "no recovery: 0 of 500"),
    ({"faults_counted_by_driver": 0}, "the driver counted none of the 256 failures"),
    ({"leaked_driver_pages": PAGE_LEAK_FLOOR}, f"{PAGE_LEAK_FLOOR} pages leaked"),
    ({"dma_api_errors": 2}, "2 DMA-API errors"),
])
def test_verdict_fail_names_the_reason(change, reason):
    row = judge("igb", {**GOOD, **change})
    assert row.verdict == FAIL and any(reason in r for r in row.reasons), row.reasons


def test_no_counter_is_not_a_failure_and_nothing_injected_is_unmeasured():
    assert judge("virtio-net", {**GOOD, "faults_counted_by_driver": float("nan")}).verdict == PASS
    row = judge("igb", {**GOOD, "faults_injected:page": 0, "faults_injected:slab": 0})
    assert row.verdict == UNMEASURED and "stack filter" in row.reasons[0]


def test_an_experiment_error_fails_with_its_headline():
    row = judge("igb", {}, ("error", "rx-alloc-failure:igb: kernel page leak@igb_poll: ..."))
    assert row.verdict == FAIL and "page leak@igb_poll" in row.reasons[0]


# ---- console -------------------------------------------------------------------------------
@pytest.mark.parametrize("line, kind", [
    ("[   12.3] UBSAN: array-index-out-of-bounds in drivers/net/ethernet/intel/igb/igb_main.c:8950:3", "UBSAN"),
    ("[   12.3] WARNING: possible circular locking dependency detected", "lockdep"),
    ("[   12.3] WARNING: suspicious RCU usage", "lockdep"),
    ("[   12.3] BUG: KFENCE: use-after-free read in igb_poll+0x1/0x2 [igb]", "KFENCE"),
    ("[   12.3] BUG: KASAN: slab-use-after-free in igb_poll+0x1/0x2 [igb]", "KASAN"),
])
def test_debug_reports_fail_and_are_named(line, kind):
    assert is_crash_line(line)
    assert classify([line]).kind == kind


def test_faults_refuses_a_prebuilt_kernel(tmp_path, capsys):
    from harness.cli import main

    assert main(["faults", "--kernel", "debian-6.1", "--out", str(tmp_path / "out")]) == 2
    assert "needs the debug flavour" in capsys.readouterr().err


def test_cost_and_debug_together_are_refused(tmp_path, capsys):
    from harness.cli import main

    assert main(["run", "--cost", "--debug", "--out", str(tmp_path / "out")]) == 2
    assert "sanitizers" in capsys.readouterr().err


# Recorded: igb with debug--skb-use-after-free.patch on 6.12.95's debug flavour.
KFENCE_REPORT = """\
[  146.148211] ==================================================================
[  146.149002] BUG: KFENCE: use-after-free write in igb_poll+0x313b/0x3af4 [igb]
[  146.149002]
[  146.149002] Use-after-free write at 0x00000000daef20e1 (in kfence-#44):
[  146.149002]  igb_poll+0x313b/0x3af4 [igb]
[  146.149002]  __napi_poll.constprop.0+0x9e/0x2dd
[  146.149002]
[  146.149002] freed by task 41 on cpu 0 at 146.135133s (0.013434s ago):
[  146.149002]  igb_poll+0x310a/0x3af4 [igb]
[  146.149002] ==================================================================
[  146.160000] igb 0000:00:04.0 eth1: some later line
"""


def test_kfence_report_is_named_bounded_and_located(tmp_path):
    import pexpect

    from harness.guest.console import ConsoleWatcher

    (tmp_path / "in.txt").write_text(KFENCE_REPORT)
    w = ConsoleWatcher(pexpect.spawn("cat", [str(tmp_path / "in.txt")]), tmp_path / "console.log")
    w.start()
    assert w.eof.wait(10)
    (report,) = w.reports(0)
    assert (report.kind, report.function) == ("KFENCE", "igb_poll")
    assert "use-after-free" in report.fingerprint
    assert report.lines[-1].startswith("====") and not any("later line" in line for line in report.lines)


def test_a_named_report_leads_the_failure_over_a_fragment():
    from harness.claims.lab import ExperimentFailure
    from harness.guest.crash import KernelReport

    fragment = KernelReport("report", "freed by task 41 on cpu 0", "?", ("freed by task 41 on cpu 0",))
    named = classify(["BUG: KFENCE: use-after-free write in igb_poll+0x313b/0x3af4 [igb]"])
    assert "KFENCE@igb_poll" in ExperimentFailure("rx", "error", "x", (fragment, named)).headline


def test_driver_counts_come_from_the_catalogue_counter():
    from types import SimpleNamespace

    from harness.faults.experiment import counted, kinds_for

    runs = [SimpleNamespace(rx_delta={"rx_queue_0_alloc_failed": 3, "rx_queue_1_alloc_failed": 2, "rx_packets": 9}),
            SimpleNamespace(rx_delta={"rx_queue_0_alloc_failed": 1})]
    assert counted("igb", *runs) == 6
    assert counted("virtio-net", *runs) is None
    assert kinds_for("vmxnet3") == ("page", "slab", "function") and kinds_for("igb") == ("page", "slab")


# ---- the stack filter's ranges for built-in code -----------------------------------------------
VIRTIO_KALLSYMS = (FIXTURES / "kallsyms_builtin_virtio_net.txt").read_text()
VIRTIO_FUNCTIONS = {n for n in re.findall(r" [tT] (\S+)", VIRTIO_KALLSYMS) if n.startswith("virtnet_")} | {
    "vq_type", "mergeable_buf_free", "virtio_net_driver_init", "virtio_net_driver_exit"}


def test_builtin_text_range_is_the_objects_text_only():
    """module_init/exit (.init.text, .exit.text) and a same-named static function
    elsewhere stay out: [min, max] over them spanned most of the kernel."""
    r = text_range(text_symbols(VIRTIO_KALLSYMS), functions=VIRTIO_FUNCTIONS)
    assert r.start == 0xFFFFFFFF81B3C3D0  # vq_type, the object's first
    assert r.end == 0xFFFFFFFF81B57119  # the symbol after virtnet_poll, its last
    assert not r.start <= 0xFFFFFFFF81700000 < r.end  # the other virtnet_poll_tx
    assert r.end - r.start < 0x20000


def test_dma_debug_text_covers_the_checkers_helpers():
    r = dma_debug_text(text_symbols(VIRTIO_KALLSYMS))
    add_dma_entry = int(re.search(r"^([0-9a-f]+) t add_dma_entry$", VIRTIO_KALLSYMS, re.M).group(1), 16)
    assert r is not None and r.start <= add_dma_entry < r.end
    assert dma_debug_text(text_symbols(KALLSYMS)) is None


def test_injection_rejects_the_checkers_stacks_and_resets_the_reject_range():
    text, checker = TextRange(0x1000, 0x2000, "module igb"), TextRange(0x5000, 0x6000, "checker")
    assert "echo 0x5000 > /sys/kernel/debug/failslab/reject-start" in Injection(
        "slab", 128, 50, text, reject=checker).arm_script()
    assert "echo 0x0 > /sys/kernel/debug/failslab/reject-end" in Injection("slab", 128, 50, text).arm_script()


def test_a_checker_that_switched_itself_off_leaves_the_row_unmeasured():
    row = judge("igb", {**GOOD, "dma_api_errors": float("nan")})
    assert row.verdict == UNMEASURED and "DMA-API checker did not count" in row.reasons[0]
    leaking = judge("igb", {**GOOD, "dma_api_errors": float("nan"), "leaked_driver_pages": 40})
    assert leaking.verdict == FAIL


def test_a_lockdep_report_is_named_by_its_first_frame_past_lockdep():
    """RCU-lockdep's splat names a file:line, no function: the backtrace's first frame
    that is not lockdep's (7.3.4, vmxnet3 attaching XDP)."""
    report = classify((FIXTURES / "console_lockdep_vmxnet3_xdp.txt").read_text().splitlines())
    assert (report.kind, report.function) == ("lockdep", "vmxnet3_xdp")
    assert "lockdep@vmxnet3_xdp" in report.fingerprint
