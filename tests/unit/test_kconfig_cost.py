"""Objects of a build log attributed to the Kconfig option that brings each in,
on a small tree laid out as kbuild's (pure: files in tmp_path)."""

from pathlib import Path

from harness.artifacts.kconfig_cost import ALWAYS, Attribution, compiled_objects, cost_by_option, parse_rules

LOG = """\
  CC      /b/key/tools/objtool/libsubcmd/exec-cmd.o
  CC      /b/key/kernel/bounds.s
  CC      /b/key/drivers/acpi/acpica/dsfield.o
  CC [M]  /b/key/drivers/net/ethernet/intel/igb/igb_main.o
  AR      /b/key/drivers/acpi/built-in.a
"""


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_compiled_objects_are_the_cc_lines_relative_to_the_build():
    assert compiled_objects(LOG, "/b/key") == ["tools/objtool/libsubcmd/exec-cmd.o", "kernel/bounds.s",
                                               "drivers/acpi/acpica/dsfield.o",
                                               "drivers/net/ethernet/intel/igb/igb_main.o"]


def test_rules_join_continuations_and_carry_the_ifdef():
    rules = parse_rules("obj-$(CONFIG_IGB) += igb.o \\\n\tigb2.o\nifdef CONFIG_PTP\nobj-y += ptp.o\nelse\n"
                        "obj-y += noptp.o\nendif\nigb-y := igb_main.o igb_ethtool.o # parts\n")
    assert [(r.owner, r.option, r.items) for r in rules] == [
        ("obj", "CONFIG_IGB", ("igb.o", "igb2.o")), ("obj", "CONFIG_PTP", ("ptp.o",)), ("obj", None, ("noptp.o",)),
        ("igb", None, ("igb_main.o", "igb_ethtool.o"))]


def test_an_object_costs_its_innermost_option(tmp_path):
    src = tree(tmp_path, {
        "Kbuild": "obj-y += drivers/\n",
        "drivers/Makefile": "obj-$(CONFIG_ACPI) += acpi/\nobj-y += net/\n",
        "drivers/acpi/Makefile": "obj-y += acpica/\n",
        "drivers/acpi/acpica/Makefile": "obj-y += dsfield.o\n",
        "drivers/net/Makefile": "obj-$(CONFIG_IGB) += igb/\n",
        "drivers/net/igb/Makefile": "obj-$(CONFIG_IGB) += igb.o\nigb-y := igb_main.o\nigb-$(CONFIG_PTP) += igb_ptp.o\n",
        "kernel/Makefile": "obj-y += fork.o\n",
    })
    a = Attribution(src)
    assert a.option("drivers/acpi/acpica/dsfield.o") == "CONFIG_ACPI"  # obj-y up to acpi/
    assert a.option("drivers/net/igb/igb_main.o") == "CONFIG_IGB"  # a composite's part, as igb.o
    assert a.option("drivers/net/igb/igb_ptp.o") == "CONFIG_PTP"
    assert a.option("kernel/fork.o") == ALWAYS
    assert a.option("tools/objtool/check.o") == "(host tools)"
    by = cost_by_option(src, ["drivers/acpi/acpica/dsfield.o", "drivers/net/igb/igb_main.o", "kernel/fork.o",
                              "drivers/acpi/acpica/exfield.o"])
    assert by == {"CONFIG_ACPI": ["drivers/acpi/acpica/dsfield.o", "drivers/acpi/acpica/exfield.o"],
                  "CONFIG_IGB": ["drivers/net/igb/igb_main.o"], ALWAYS: ["kernel/fork.o"]}
