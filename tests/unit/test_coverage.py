"""--coverage: gcov's JSON read back per source file, counts of several experiments
merged, and the lines and branches of a claim's functions reported, with the lines
never run (source/coverage.py, report.coverage_lines)."""

from harness.report.report import coverage_lines
from harness.source.coverage import Counts, coverage_in, parse_gcov_json


def doc(counts: dict[int, int], branches: dict[int, list[int]]) -> dict:
    """`gcov --json-format` (gcc 12) for igb_main.c, plus a header inline the file list has too."""
    return {"format_version": "1", "gcc_version": "12.2.0", "files": [
        {"file": "drivers/net/ethernet/intel/igb/igb_main.c", "functions": [], "lines": [
            {"line_number": n, "count": c, "unexecuted_block": c == 0, "function_name": "igb_clean_rx_irq",
             "branches": [{"count": b, "throw": False, "fallthrough": i == 0}
                          for i, b in enumerate(branches.get(n, []))]}
            for n, c in counts.items()]},
        {"file": "./include/linux/skbuff.h", "functions": [], "lines": [
            {"line_number": 12, "count": 5, "unexecuted_block": False, "function_name": "skb_put", "branches": []}]},
    ]}


def test_lines_and_branches_of_the_functions_merged_over_experiments():
    small = parse_gcov_json(doc({100: 2000, 101: 0, 102: 2000, 150: 7}, {100: [2000, 0]}), "igb_main.c")
    large = parse_gcov_json(doc({100: 2000, 101: 2000, 102: 0, 150: 0}, {100: [0, 2000]}), "igb_main.c")
    assert 12 not in small.lines  # the header's inline is not igb_main.c's
    total = Counts()
    total += small
    total += large
    cov = coverage_in(total, {"igb_clean_rx_irq": (90, 120)})
    assert (cov["lines"], cov["of_lines"], cov["branches"], cov["of_branches"]) == (3, 3, 2, 2)
    alone = coverage_in(small, {"igb_clean_rx_irq": (90, 120)})
    assert (alone["lines"], alone["of_lines"], alone["never_run"], alone["branches"]) == (2, 3, [101], 1)


def test_the_report_says_what_ran_and_what_never_did():
    row = {"file": "drivers/net/ethernet/intel/igb/igb_main.c", "experiments": ["rx", "rx@1514B"],
           "functions": ["igb_clean_rx_irq"], "lines": 2, "of_lines": 3, "branches": 1, "of_branches": 2,
           "never_run": [101], "never_run_total": 1}
    (line,) = coverage_lines([row])
    assert line == ("igb_main.c (igb_clean_rx_irq): 2 of 3 lines and 1 of 2 branches executed by rx, rx@1514B; "
                    "never run: lines 101")
    assert coverage_lines([{"file": "x/igb_xsk.c", "unmeasured": "igb_xsk.c: this kernel's source is not "
                            "available"}]) == ["igb_xsk.c: not measured (igb_xsk.c: this kernel's source is not "
                                               "available)"]
