from pathlib import Path

import pytest

from harness.artifacts.cross_object import require_cross
from harness.errors import HarnessError, MissingToolError
from harness.source.objdump import arm64_barrier, covered_functions, parse_fences, x86_fence
from harness.source.objdump import in_ranges as in_source_ranges
from harness.source.rx_source import barrier_sites, function_ranges, rx_functions, strip_comments

IGB_MAIN = "drivers/net/ethernet/intel/igb/igb_main.c"


def in_ranges(f, ranges):
    return in_source_ranges(f, IGB_MAIN, ranges)

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def test_fences_in_real_igb_poll_disassembly():
    # `objdump -dl --no-show-raw-insn --disassemble=igb_poll vmlinux` of the harness's 6.12.95 build.
    fences = parse_fences((FIX / "objdump_dl_igb_poll.txt").read_text())
    assert [(f.insn, f.line, f.function) for f in fences] == [("sfence", 2930, "igb_xdp_ring_update_tail")]
    assert fences[0].file.endswith("drivers/net/ethernet/intel/igb/igb_main.c")


SOURCE = """\
static void igb_other(void)
{
\twmb();
}

static bool igb_clean_rx_irq(struct igb_q_vector *q_vector, const int budget)
{
\twhile (1) {
\t\tdma_rmb();
\t}
}

void igb_alloc_rx_buffers(struct igb_ring *rx_ring, u16 cleaned_count);

void igb_alloc_rx_buffers(struct igb_ring *rx_ring, u16 cleaned_count)
{
\t\tdma_wmb();
}
"""


def test_function_ranges_skip_prototypes_and_find_barriers():
    ranges = function_ranges(SOURCE, ("igb_clean_rx_irq", "igb_alloc_rx_buffers"))
    assert ranges == {"igb_clean_rx_irq": (6, 11), "igb_alloc_rx_buffers": (15, 18)}
    assert barrier_sites(SOURCE, ranges) == [(9, "dma_rmb", "igb_clean_rx_irq"),
                                             (17, "dma_wmb", "igb_alloc_rx_buffers")]


def test_arm64_barriers_in_real_cross_compiled_igb_main():
    # The dmb/dsb of the harness's arm64 igb_main.o (6.12.95), with their line info.
    fences = parse_fences((FIX / "objdump_dl_igb_main_arm64.txt").read_text(), arm64_barrier)
    hot = [(f.insn, f.line) for f in fences if in_ranges(f, {"igb_clean_rx_irq": (8873, 9027),
                                                               "igb_alloc_rx_buffers": (9076, 9139)})]
    # dma_rmb() and dma_wmb() only; readl()/writel()'s own dmb name io.h lines, not igb's.
    assert sorted(set(hot)) == [("dmb oshld", 8916), ("dmb oshst", 9136)]
    assert {(f.insn, f.function) for f in fences if f.line == 2930} == {("dsb st", "igb_xdp_ring_update_tail")}
    assert all(f.insn.split()[0] in ("dmb", "dsb") for f in fences)


def test_x86_matcher_ignores_arm64_barriers_and_back():
    assert x86_fence("    9424:\tlfence") == "lfence"
    assert x86_fence("    9424:\tdmb\toshld") is None
    assert arm64_barrier("    9424:\tdmb\toshld") == "dmb oshld"
    assert arm64_barrier("    9424:\tlfence") is None


def test_missing_cross_compiler_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match="gcc-aarch64-linux-gnu"):
        require_cross("arm64")
    with pytest.raises(HarnessError, match="unknown architecture"):
        require_cross("riscv")


def test_comments_never_count_as_barriers():
    src = "static void f(void)\n{\n\t/* rmb() here would be wrong */\n\tdma_rmb(); // not wmb()\n}\n"
    assert "rmb()" not in strip_comments(src).splitlines()[2]
    assert barrier_sites(src, function_ranges(src)) == [(4, "dma_rmb", "f")]


def test_rx_functions_follow_calls_and_leave_the_tx_side_out():
    src = """static void helper(void)
{
\tsmp_rmb();
}

static void igb_xmit_xdp_ring(void)
{
\twmb();
}

static int clean(void)
{
\thelper();
\tigb_xmit_xdp_ring();
}
"""
    ranges = rx_functions(src, ("clean",))
    assert set(ranges) == {"clean", "helper"}  # the tx helper is judged apart
    assert barrier_sites(src, ranges) == [(3, "smp_rmb", "helper")]


def test_relative_line_info_of_debian_dbg_objects_is_attributed():
    # Debian's -dbg igb.ko (7.3.4+deb13) names its sources relative to the build tree.
    text = """000000000000afc0 <igb_poll>:
igb_poll():
debian/build/build_amd64_none_amd64/drivers/net/ethernet/intel/igb/igb_main.c:8279
    afc0:\tendbr64
igb_clean_rx_irq():
debian/build/build_amd64_none_amd64/drivers/net/ethernet/intel/igb/igb_main.c:9001 (discriminator 2)
    b100:\tlfence
"""
    source = "drivers/net/ethernet/intel/igb/igb_main.c"
    (fence,) = parse_fences(text)
    assert (fence.insn, fence.line, fence.function) == ("lfence", 9001, "igb_clean_rx_irq")
    assert covered_functions(text, source, {"igb_poll": (8270, 8300), "igb_clean_rx_irq": (8990, 9100),
                                            "igb_alloc_rx_buffers": (1, 2)}) == {"igb_poll", "igb_clean_rx_irq"}


# igb_clean_rx_irq()'s write-back check as in 6.12.95 / 7.3.4 (abridged).
RX_LOOP = """\
static int igb_clean_rx_irq(struct igb_q_vector *q_vector, const int budget)
{
\twhile (likely(total_packets < budget)) {
\t\tunion e1000_adv_rx_desc *rx_desc;
\t\trx_desc = IGB_RX_DESC(rx_ring, rx_ring->next_to_clean);
\t\tsize = le16_to_cpu(rx_desc->wb.upper.length);
\t\tif (!size)
\t\t\tbreak;

\t\t/* keep us from reading any other fields out of the rx_desc */
\t\tdma_rmb();

\t\trx_buffer = igb_get_rx_buffer(rx_ring, size, &rx_buf_pgcnt);
\t\tif (igb_test_staterr(rx_desc, E1000_RXDADV_STAT_TSIP)) {
\t\t\tpkt_offset += ts_hdr_len;
\t\t}
\t}
}
"""


def test_the_rx_loop_orders_descriptor_reads_after_the_write_back_check():
    from harness.source.rx_source import status_order

    order = status_order(RX_LOOP, "igb_clean_rx_irq", "rx_desc")
    assert (order.status_line, order.rmb_line, order.early_reads) == (6, 11, ())


def test_a_dma_rmb_moved_below_a_descriptor_read_is_out_of_order():
    # The barriers--rmb-late breaker: the barrier is still there, after the TSIP status read.
    from harness.source.rx_source import status_order

    late = RX_LOOP.replace("\t\tdma_rmb();\n", "").replace("\t\t\tpkt_offset", "\t\t\tdma_rmb();\n\t\t\tpkt_offset")
    order = status_order(late, "igb_clean_rx_irq", "rx_desc")
    assert order.rmb_line == 14 and order.early_reads == (
        (13, "if (igb_test_staterr(rx_desc, E1000_RXDADV_STAT_TSIP)) {"),)
    gone = status_order(RX_LOOP.replace("\t\tdma_rmb();\n", ""), "igb_clean_rx_irq", "rx_desc")
    assert gone.rmb_line is None and len(gone.early_reads) == 1
    # the comment's "rx_desc" is no read; no such loop, no order
    assert status_order(RX_LOOP, "igb_poll", "rx_desc") is None
