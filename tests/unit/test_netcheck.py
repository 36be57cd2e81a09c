from harness.measurement.netcheck import parse_ethtool_i

# Captured from `ethtool -i eth2` in a harness guest (linux-source 6.12.95, QEMU 10.0.2 igb).
ETHTOOL_I_IGB = """driver: igb
version: 6.12.95
firmware-version: 2.1.0
expansion-rom-version:
bus-info: 0000:00:04.0
supports-statistics: yes
supports-test: yes
supports-eeprom-access: yes
supports-register-dump: yes
supports-priv-flags: yes
"""


def test_parse_ethtool_i():
    info = parse_ethtool_i(ETHTOOL_I_IGB)
    assert info["driver"] == "igb"
    assert info["bus-info"] == "0000:00:04.0"
    assert info["firmware-version"] == "2.1.0"
    assert info["supports-priv-flags"] == "yes"
    assert info["expansion-rom-version"] == ""
