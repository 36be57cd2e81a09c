import threading

import pytest

from harness.cache import Cache, hash_parts


def test_build_once_then_hit(tmp_path):
    cache = Cache(tmp_path)
    calls = []

    def build(out):
        calls.append(1)
        (out / "a.bin").write_bytes(b"abc")
        return {"n": 1}

    first = cache.get_or_build("k", "key1", build)
    second = cache.get_or_build("k", "key1", build)
    assert calls == [1] and first.path == second.path and second.meta == {"n": 1}


def test_corrupt_artifact_is_rebuilt(tmp_path, capsys):
    cache = Cache(tmp_path)
    art = cache.get_or_build("k", "key", lambda out: (out / "bzImage").write_bytes(b"good") and {})
    (art.path / "bzImage").write_bytes(b"evil")
    rebuilt = []

    def rebuild(out):
        rebuilt.append(1)
        (out / "bzImage").write_bytes(b"good")
        return {}

    again = cache.get_or_build("k", "key", rebuild)
    assert rebuilt == [1] and (again.path / "bzImage").read_bytes() == b"good"
    assert "does not match its recorded sha256" in capsys.readouterr().err


def test_failed_build_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)

    def boom(out):
        (out / "half").write_bytes(b"x")
        raise RuntimeError("compiler died")

    with pytest.raises(RuntimeError):
        cache.get_or_build("k", "key", boom)
    assert [p.name for p in (tmp_path / "k").iterdir() if not p.name.startswith(".key.lock")] == []


def test_concurrent_builders_build_once(tmp_path):
    cache = Cache(tmp_path)
    calls = []

    def slow(out):
        calls.append(1)
        import time

        time.sleep(0.3)
        (out / "f").write_text("x")
        return {}

    threads = [threading.Thread(target=cache.get_or_build, args=("k", "same", slow)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]


def test_hash_parts_separates_names_and_contents():
    assert hash_parts([("a", "bc")]) != hash_parts([("ab", "c")])
    assert hash_parts([("a", "x"), ("b", "y")]) != hash_parts([("a", "xb"), ("", "y")])
