"""Parsers against outputs captured from a real harness guest (linux-source 6.12.95,
QEMU 10.0.2, 300 pktgen frames e1000e -> igb with swiotlb=force); see tests/fixtures/."""

from pathlib import Path

import pytest

from harness.measurement.counters import CounterSnapshot, delta, losses, parse_ethtool_stats, parse_ip_link_stats
from harness.measurement.ftrace_parse import count_graph, parse_hist, parse_hist_file
from harness.measurement.probes import resolve_functions, with_aliases
from harness.measurement.traffic import PktgenConfig, parse_pktgen_result, pktgen_script

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def test_function_graph_counts_under_igb_poll():
    graph = count_graph(fixture("function_graph_igb_poll_swiotlb_300.txt"), {"igb_poll", "e1000e_poll"})
    igb = graph.counts["igb_poll"]
    assert igb["napi_build_skb"] == 300
    assert igb["napi_gro_receive"] == 300
    assert igb["__dma_sync_single_for_cpu"] == 300
    assert graph.roots_entered["igb_poll"] > 0
    assert not graph.unattributed


def test_function_graph_nesting_and_other_cpus():
    text = """\
# tracer: function_graph
 0)               |  e1000e_poll() {
 1)               |  igb_poll() {
 1)   0.950 us    |    napi_build_skb();
 0)   1.000 us    |    dma_unmap_page_attrs();
 1)               |    igb_alloc_rx_buffers() {
 1)   2.000 us    |      dma_map_page_attrs();
 1)   3.000 us    |    }
 1) + 10.10 us    |  }
 0) + 11.00 us    |  }
 ------------------------------------------
 1)    <idle>-0    =>  ksoftir-15
 ------------------------------------------
 1)   0.500 us    |  dma_map_page_attrs();
"""
    graph = count_graph(text, {"igb_poll", "e1000e_poll"})
    assert graph.counts["igb_poll"] == {"napi_build_skb": 1, "igb_alloc_rx_buffers": 1, "dma_map_page_attrs": 1}
    assert graph.counts["e1000e_poll"] == {"dma_unmap_page_attrs": 1}
    assert graph.roots_entered == {"igb_poll": 1, "e1000e_poll": 1}
    assert graph.unattributed == {"dma_map_page_attrs": 1}


def test_hist_sizes_attributed_by_device():
    table = parse_hist(fixture("hist_dma_sync_dev_swiotlb_300.txt"))
    assert table.rows == [({"devname": "0000:00:04.0", "dir": "2", "len": "1536"}, {"hitcount": 300})]
    assert (table.hits, table.entries, table.dropped) == (300, 1, 0)


def test_hist_file_with_two_triggers_splits_tables():
    tables = parse_hist_file(fixture("hist_dma_map_swiotlb_300.txt"))
    assert set(tables) == {"devname,dir,len", "devname,attrs"}
    assert tables["devname,dir,len"].rows == [({"devname": "0000:00:05.0", "dir": "1", "len": "60"},
                                                {"hitcount": 300})]
    assert tables["devname,attrs"].rows == [({"devname": "0000:00:05.0", "attrs": "0"}, {"hitcount": 300})]


def test_pktgen_result():
    r = parse_pktgen_result(fixture("pktgen_result_300.txt"))
    assert (r.sent, r.errors, r.pkt_size) == (300, 0, 60)
    assert r.usec == 99926 and r.pps == 3002


def test_pktgen_without_result_is_an_error():
    with pytest.raises(ValueError, match="did not report a completed run: Result: Idle"):
        parse_pktgen_result("Params: count 10\nResult: Idle\n")


def test_pktgen_script_sets_exact_count_and_rate():
    script = pktgen_script("eth1", "52:54:00:12:34:01", PktgenConfig(count=1234, rate_pps=5000))
    assert "echo 'count 1234' > /proc/net/pktgen/eth1" in script
    assert "echo 'ratep 5000' > /proc/net/pktgen/eth1" in script
    assert "echo 'dst_mac 52:54:00:12:34:01' > /proc/net/pktgen/eth1" in script
    assert script.index("add_device eth1") < script.index("echo start")


def test_ethtool_stats():
    igb = parse_ethtool_stats(fixture("ethtool_S_igb.txt"))
    assert igb["rx_packets"] == 300 and igb["rx_bytes"] == 19200
    assert "NIC statistics" not in " ".join(igb)
    e1000e = parse_ethtool_stats(fixture("ethtool_S_e1000e.txt"))
    assert e1000e["tx_packets"] == 300


def test_ip_link_stats_and_losses():
    link = parse_ip_link_stats(fixture("ip_j_s_link_igb.json"))
    assert link["rx_packets"] == 300
    before = CounterSnapshot("eth2", {"rx_packets": 0, "rx_missed_errors": 0}, {"rx_packets": 0, "rx_dropped": 0})
    after = CounterSnapshot("eth2", {"rx_packets": 90, "rx_missed_errors": 10}, {"rx_packets": 90, "rx_dropped": 2})
    d = delta(before, after)
    assert d == {"rx_packets": 90, "rx_missed_errors": 10, "link.rx_packets": 90, "link.rx_dropped": 2}
    assert losses(d) == {"rx_missed_errors": 10, "link.rx_dropped": 2}


def test_a_counter_that_did_not_move_is_a_measured_zero():
    # XDP_TX that sends nothing back leaves the sender's rx counter flat: 0, not missing.
    before = CounterSnapshot("eth1", {"rx_packets": 7}, {"rx_packets": 7, "tx_packets": 3})
    after = CounterSnapshot("eth1", {"rx_packets": 7}, {"rx_packets": 7, "tx_packets": 5})
    assert delta(before, after) == {"rx_packets": 0, "link.rx_packets": 0, "link.tx_packets": 2}


def test_bpftool_map_dump_with_btf():
    from harness.measurement.xdp import parse_map_dump

    # `bpftool -j map dump name headroom_seen` after 200 frames through xdp_headroom on igb.
    assert parse_map_dump(fixture("bpftool_map_dump_headroom.json")) == [({"grow": 152, "len": 60}, 200)]


def test_headroom_kprobe_trace():
    from harness.measurement.xdp import parse_headroom_trace

    # 5 frames through xdp_headroom.o on igb with the kprobe on bpf_xdp_adjust_head(xdp, 0).
    assert parse_headroom_trace(fixture("kprobe_xdp_adjust_head_5.txt")) == [0xC0] * 5


def test_btf_struct_sizes():
    from harness.measurement.btf import parse_struct_sizes

    assert parse_struct_sizes(fixture("btf_struct_sizes.txt")) == {"xdp_frame": 40, "skb_shared_info": 320}


def test_perf_stat_csv_marks_unsupported():
    from harness.measurement.probes import parse_perf_stat_csv

    # `perf stat -a -x,` (perf 6.1 in the guest) around 2,000 frames under TCG: no PMU.
    values = parse_perf_stat_csv(fixture("perf_stat_tcg.csv"))
    assert values["cycles"] is None and values["instructions"] is None
    assert values["task-clock"] == 3994.07 and values["context-switches"] == 1616.0


def test_function_graph_of_a_module_names_its_module():
    """Debian 6.1 (igb as a module) prints `igb_poll [igb]() {`, as captured from its guest."""
    text = """\
# tracer: function_graph
 0)               |  igb_poll [igb]() {
 0)   1.553 us    |    build_skb();
 0)   6.142 us    |    napi_complete_done();
 0) # 1988.910 us |  }
"""
    graph = count_graph(text, {"igb_poll"})
    assert graph.roots_entered == {"igb_poll": 1}
    assert graph.counts["igb_poll"] == {"build_skb": 1, "napi_complete_done": 1}


STACK_HIST = """\
# event histogram
#
# trigger info: hist:keys=dir,attrs,{key}:vals=hitcount:sort=hitcount:size=2048 if device == "0000:00:04.0" [active]
#

{{ dir:          2, attrs:         34, {key}:
         dma_map_page_attrs+0x5/0x2a0
         igb_alloc_rx_buffers+0x9a/0x2e0 [igb]
         igb_poll+0x4f1/0x1060 [igb]
}} hitcount:         12

Totals:
    Hits: 12
    Entries: 1
    Dropped: 0
"""


@pytest.mark.parametrize("key", ["common_stacktrace", "stacktrace"])  # 6.5 renamed it; 6.1 has the old name
def test_a_stack_trace_key_is_read_under_either_name(key):
    (table,) = parse_hist_file(STACK_HIST.format(key=key)).values()
    assert table.keys == 'dir,attrs,common_stacktrace if device == "0000:00:04.0"'
    ((keys, vals),) = table.rows
    assert keys == {"dir": "2", "attrs": "34",
                    "common_stacktrace": "dma_map_page_attrs < igb_alloc_rx_buffers < igb_poll"}
    assert vals == {"hitcount": 12} and table.hits == 12


@pytest.mark.parametrize("available, probed", [
    # 7.x: slab allocates frozen pages below __alloc_pages_noprof, so the successor is probed
    ({"__alloc_frozen_pages_noprof", "__alloc_pages_noprof"}, "__alloc_frozen_pages_noprof"),
    ({"__alloc_pages_noprof"}, "__alloc_pages_noprof"),  # 6.10 .. 6.13
    ({"__alloc_pages"}, "__alloc_pages"),  # 6.1
])
def test_page_allocations_probed_where_every_one_passes(available, probed):
    assert resolve_functions(["__alloc_pages_noprof", "napi_build_skb"], available) == {"__alloc_pages_noprof": probed}
    assert probed in with_aliases(["__alloc_pages_noprof"])
