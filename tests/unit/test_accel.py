import json

from harness.cache import Cache
from harness.guest.accel import choose_accel, kvm_probe_verdict


def test_kvm_error_means_no_kvm_even_with_banner():
    ok, why = kvm_probe_verdict("Linux version 6.12\n",
                                "KVM internal error. Suberror: 1\nemulation failure\n", 1)
    assert not ok and "KVM internal error" in why


def test_banner_means_kvm_works():
    ok, why = kvm_probe_verdict("[    0.000000] Linux version 6.12.0 (harness@harness)\n", "", -9)
    assert ok and "banner" in why


def test_silence_is_failure():
    ok, why = kvm_probe_verdict("", "qemu-system-x86_64: something odd\n", 1)
    assert not ok and "no kernel banner" in why


def test_tcg_requested_skips_probe(tmp_path):
    assert choose_accel("tcg", tmp_path / "none", Cache(tmp_path)).accel == "tcg"


def test_cached_probe_result_is_used(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    import harness.guest.accel as accel

    monkeypatch.setattr(accel, "probe_kvm", lambda *a: (False, "KVM probe boot failed: emulation failure"))
    first = choose_accel("auto", tmp_path / "bz", cache)
    assert first.accel == "tcg" and "emulation failure" in first.reason
    monkeypatch.setattr(accel, "probe_kvm", lambda *a: (_ for _ in ()).throw(AssertionError("probed twice")))
    assert choose_accel("auto", tmp_path / "bz", cache).accel == "tcg"
    (cached,) = (tmp_path / "probe").glob("kvm-*.json")
    assert json.loads(cached.read_text())["ok"] is False


def test_forced_kvm_that_fails_is_an_error(tmp_path, monkeypatch):
    import pytest

    import harness.guest.accel as accel
    from harness.errors import HarnessError

    monkeypatch.setattr(accel, "probe_kvm", lambda *a: (False, "no /dev/kvm"))
    with pytest.raises(HarnessError, match="--accel kvm requested but KVM does not work here: no /dev/kvm"):
        choose_accel("kvm", tmp_path / "bz", Cache(tmp_path))
