from pathlib import Path

from harness.claims.barriers import barrier_sites, function_ranges, parse_fences

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
