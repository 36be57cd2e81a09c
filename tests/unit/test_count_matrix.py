"""The matrix's per-frame count table: what differs between kernels, what agrees,
what one kernel lacks, and the timing-dependent counts it leaves out."""

import pandas as pd

from harness.report.compare import Tolerance
from harness.report.matrix import count_matrix


def _table(rows):
    return pd.DataFrame(rows, columns=["experiment", "driver", "direction", "metric", "per_packet"])


def test_counts_compared_left_out_and_one_sided():
    common = [("rx", "igb", "rx", "calls:napi_build_skb", 1.0), ("rx", "e1000e", "tx", "dma_map_page_attrs", 1.0)]
    a = _table([*common,
        ("rx", "igb", "rx", "calls:__alloc_pages_noprof", 0.01),
        ("rx", "igb", "rx", "calls:igb_poll", 0.80),  # per poll: timing
        ("rx", "igb", "rx", "calls:igb_alloc_rx_buffers", 0.58),  # per refill batch: timing
        ("rx", "e1000e", "tx", "dma_unmap_page_attrs", 0.93),  # TX completions pending: timing
        ("rx", "igb", "rx", "counter:rx_queue_1_packets", 1.0),
        ("rx", "", "", "pktgen_pps", 4900.0),
    ])
    b = _table([*common,
        ("rx", "igb", "rx", "calls:__alloc_pages_noprof", 0.50),
        ("rx", "igb", "rx", "calls:igb_poll", 1.04),
        ("rx", "igb", "rx", "calls:igb_alloc_rx_buffers", 0.63),
        ("rx", "e1000e", "tx", "dma_unmap_page_attrs", 1.0),
        ("rx", "igb", "rx", "counter:rx_queue_0_packets", 1.0),
        ("rx", "", "", "pktgen_pps", 5000.0),
    ])
    m = count_matrix({"a": a, "b": b}, ["a", "b"], Tolerance(0.02, 0.02))
    assert [(r["metric"], r["values"], round(r["delta"]["b"], 4)) for r in m.rows] == [
        ("calls:__alloc_pages_noprof", {"a": 0.01, "b": 0.5}, 0.49)]
    assert m.same == 2
    assert m.batching == 3
    assert m.one_sided == ["rx/igb/counter:rx_queue_0_packets (b)", "rx/igb/counter:rx_queue_1_packets (a)"]
