import math

import pytest

from harness.claims.base import Check, ClaimResult
from harness.claims.lab import ExperimentFailure, describe_exit, failure_message
from harness.errors import GuestCommandError, HarnessError


def claim(*checks: Check, errors=()) -> ClaimResult:
    return ClaimResult("x", "title", "7", list(checks), errors=list(errors))


def check(cid: str, value, op: str, target: float, **kw) -> Check:
    return Check(cid, cid, value, op, target, **kw)


def test_all_hold_confirms():
    r = claim(check("maps/frame", 0.0, "<", 0.05), check("build_skb/frame", 1.003, "~", 1.0, rel_tol=0.01))
    assert r.verdict == "confirmed"
    assert r.rule == "maps/frame < 0.05 AND build_skb/frame ≈ 1 ±1%"


def test_one_failure_refutes_even_with_an_unmeasured_check():
    r = claim(check("maps/frame", 1.0, "<", 0.05), check("no-reuse maps/frame", None, ">", 0.9))
    assert r.verdict == "refuted"


def test_unmeasured_makes_inconclusive_and_says_why():
    assert claim(check("a", 0.0, "<", 1), check("b", None, "<", 1)).verdict == "inconclusive"
    assert claim(check("a", math.nan, "<", 1)).verdict == "inconclusive"
    c = check("b", None, "<", 1, unmeasured="needs CONFIG_DEBUG_PAGE_REF")
    assert c.describe() == "b < 1: measured unavailable (not measured: needs CONFIG_DEBUG_PAGE_REF)"
    assert c.to_json()["unmeasured"] == "needs CONFIG_DEBUG_PAGE_REF"


def test_a_measured_zero_is_a_number_not_a_gap():
    # XDP_TX that sent nothing back: the sender's rx counter did not move.
    assert claim(check("bounced/frame", 0.0, "~", 1.0, rel_tol=0.01)).verdict == "refuted"


def test_a_failed_experiment_is_an_error_whatever_the_checks_say():
    crash = ExperimentFailure("rx", "error", "ssh connection to the guest is gone", qemu_exit="killed by signal 9")
    r = claim(check("a", 0.0, "<", 1), errors=[crash])
    assert r.verdict == "error"
    assert r.summary() == "rx: QEMU killed by signal 9; ssh connection to the guest is gone"
    assert claim(check("a", 2.0, "<", 1), errors=[crash]).verdict == "error"


def test_no_checks_is_never_confirmed():
    assert claim().verdict == "inconclusive"


def test_check_rejects_non_numbers_and_positional_how():
    with pytest.raises(TypeError, match="is not a number"):
        check("x", "0.5", "<", 1)
    with pytest.raises(TypeError):
        Check("x", "x", 0.5, "<", 1, "how it was measured")  # how= must be named


def test_describe_says_what_failed():
    assert check("igb maps/frame", 0.98, "<", 0.05).describe() == "igb maps/frame < 0.05: measured 0.98 (FAILS)"


def test_the_one_line_summary_shows_the_check_that_decided():
    holds, unmeasured, fails = check("a", 0.0, "<", 1), check("b", None, "<", 1), check("c", 2.0, "<", 1)
    assert claim(holds, unmeasured).deciding_check is unmeasured
    assert claim(holds, unmeasured, fails).deciding_check is fails
    assert claim(holds, check("d", 0.5, "<", 1)).deciding_check is holds
    assert claim().deciding_check is None


def test_checks_are_found_and_reported_by_id():
    r = claim(check("igb-rx-maps", 0.0, "<", 0.05))
    assert r.check("igb-rx-maps").value == 0.0
    assert r.metrics == {"igb-rx-maps": 0.0}
    with pytest.raises(KeyError):
        r.check("nope")


def test_exit_signals_are_named():
    assert describe_exit("killed by signal 9") == "killed by signal 9 (SIGKILL)"
    assert describe_exit("exit status 1") == "exit status 1"


def test_a_failed_guest_script_says_its_command_and_stderr():
    e = GuestCommandError("set -e\nip link set dev eth0 xdpdrv obj /tmp/x.o sec xdp\necho done", 2, "",
                          "libbpf: prog 'x': failed to load\nError: fd 3 invalid\n", [])
    msg = failure_message(e)
    assert msg == ("guest command failed (exit 2): ip link set dev eth0 xdpdrv obj /tmp/x.o sec xdp ...; "
                   "stderr: libbpf: prog 'x': failed to load | Error: fd 3 invalid")
    assert failure_message(HarnessError("boot failed\nconsole: ...")) == "boot failed"


def test_a_dma_api_report_never_hides_why_an_experiment_failed():
    from harness.claims.lab import ExperimentFailure
    from harness.guest.crash import KernelReport

    dma = KernelReport("DMA-API", "DMA-API: igb 0000:00:04.0: device driver tries to sync DMA memory it has not "
                       "allocated [size=2048 bytes]", "igb_alloc_rx_buffers", ())
    bug = KernelReport("BUG", "BUG: unable to handle page fault", "ftrace_kill", ())
    lost = ExperimentFailure("rx-swiotlb", "error", "pktgen sent 2000, 21 missing", (dma,), "")
    assert lost.headline.startswith("rx-swiotlb: pktgen sent 2000, 21 missing (DMA-API report during it: ")
    assert ExperimentFailure("rx", "error", "ssh gone", (dma, bug), "").headline.startswith("rx: kernel BUG")
