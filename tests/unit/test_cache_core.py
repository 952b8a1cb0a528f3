"""The Rust prompt-hash cache through its Python bindings: keys, canonical form, store."""

from __future__ import annotations

import threading

import orjson
import pytest

from edgeproxy._core import CacheError, CacheStore, EdgeProxyError, cache_key, canonical_request
from edgeproxy.clock import FakeClock

BODY = b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0}'
SAME = b'{ "temperature": 0.0, "stream": true, "user": "u1",\n "messages": [{"content": "hi", "role": "user"}], "model": "chat" }'
OVERHEAD = 64


def test_equal_requests_share_a_key_and_tenants_do_not() -> None:
    k = cache_key(BODY, "chat", "openai", "tenant-a")
    assert len(k) == 16
    assert k == cache_key(SAME, "chat", "openai", "tenant-a")
    assert k != cache_key(BODY, "chat", "openai", "tenant-b")
    assert k != cache_key(BODY, "chat-2", "openai", "tenant-a")
    assert k != cache_key(BODY, "chat", "anthropic", "tenant-a")
    assert cache_key(BODY, "ab", "openai", "c") != cache_key(BODY, "a", "openai", "bc")
    assert k != cache_key(BODY.replace(b'"hi"', b'"hi!"'), "chat", "openai", "tenant-a")


def test_canonical_request() -> None:
    assert canonical_request(SAME) == canonical_request(BODY)
    assert canonical_request(b'{"b":[1.50,-0,1e3],"a":"\\u00e9\\/","stream":false}') == (
        '{"a":"\u00e9/","b":[1.5,0,1000]}'.encode()
    )
    # Big integers keep their exact value (no rounding through a double).
    assert canonical_request(b"[9007199254740993]") != canonical_request(b"[9007199254740992]")


def test_large_bodies_take_the_same_path() -> None:
    content = "word \\n \\u00e9 " * 20_000  # > 32 KiB: hashed with the GIL released
    body = f'{{"messages":[{{"role":"user","content":"{content}"}}],"temperature":0}}'.encode()
    spaced = body.replace(b":", b" : ").replace(b'"temperature" : 0', b'"temperature" : 0.0')
    assert cache_key(body, "m", "openai", "t") == cache_key(spaced, "m", "openai", "t")
    assert orjson.loads(canonical_request(body)) == orjson.loads(body)
    for raw in (body, spaced, BODY, SAME):
        assert cache_key(raw, "m", "openai", "t", utf8_checked=True) == cache_key(
            raw, "m", "openai", "t"
        )


def test_utf8_checked_path_still_refuses_bad_json_and_is_safe_on_bad_utf8() -> None:
    # The caller vouches for UTF-8 (orjson decoded the bytes first); bad JSON is still refused
    # and stray bytes give some key, never a crash.
    for bad in (b"", b"{", b'{"a":1,}', b'"\\ud800"', b'"\x01"', b"{} x"):
        with pytest.raises(CacheError):
            cache_key(bad, "m", "openai", "t", utf8_checked=True)
    assert len(cache_key(b'"\xff\\u00e9"', "m", "openai", "t", utf8_checked=True)) == 16


@pytest.mark.parametrize(
    "bad", [b"", b"{", b'{"a":1,}', b"[01]", b'"\\ud800"', b'"\x01"', b"\xff", b"{} x"]
)
def test_invalid_bodies_raise_cache_error(bad: bytes) -> None:
    with pytest.raises(CacheError, match="cannot canonicalise"):
        cache_key(bad, "m", "openai", "t")
    assert issubclass(CacheError, EdgeProxyError)


def key(n: int) -> bytes:
    return bytes([n]) * 16


def test_ttl_expiry_on_a_fake_clock() -> None:
    clock = FakeClock()
    store = CacheStore(1 << 20, 100)
    assert store.put(key(1), b"answer", 300.0, clock.monotonic())
    clock.advance(299.9)
    assert store.get(key(1), clock.monotonic()) == b"answer"
    clock.advance(0.1)
    assert store.get(key(1), clock.monotonic()) is None
    assert len(store) == 0
    stats = store.stats()
    assert (stats["hits"], stats["misses"], stats["expirations"]) == (1, 1, 1)


def test_entry_bound_evicts_least_recently_used() -> None:
    store = CacheStore(1 << 20, 3)
    for n in (1, 2, 3):
        assert store.put(key(n), bytes([n]), 60.0, 0.0)
    assert store.get(key(1), 1.0) is not None  # 2 is now the least recently used
    assert store.put(key(4), b"4", 60.0, 2.0)
    assert len(store) == 3
    assert store.get(key(2), 3.0) is None
    assert all(store.get(key(n), 3.0) is not None for n in (1, 3, 4))
    assert store.stats()["evictions"] == 1


def test_byte_bound_is_respected_in_lru_order() -> None:
    value = 1000
    store = CacheStore(4 * (value + OVERHEAD), 1000)
    assert store.max_bytes == 4 * (value + OVERHEAD)
    for n in range(1, 5):
        assert store.put(key(n), b"x" * value, 60.0, 0.0)
    assert store.bytes_used == store.max_bytes
    store.get(key(1), 0.0)
    store.get(key(2), 0.0)
    assert store.put(key(5), b"y" * (2 * value), 60.0, 0.0)  # pushes out 3, then 4
    assert store.bytes_used <= store.max_bytes
    assert [store.get(key(n), 0.0) is not None for n in range(1, 6)] == [
        True,
        True,
        False,
        False,
        True,
    ]
    assert not store.put(key(6), b"z" * store.max_bytes, 60.0, 0.0)  # can never fit
    assert store.stats()["rejected"] == 1


def test_store_rejects_bad_keys_and_ttls() -> None:
    store = CacheStore(1000, 10)
    with pytest.raises(ValueError, match="16 bytes"):
        store.get(b"short", 0.0)
    with pytest.raises(ValueError, match="16 bytes"):
        store.put(b"x" * 17, b"v", 1.0, 0.0)
    assert not store.put(key(1), b"v", 0.0, 0.0)
    assert not store.put(key(1), b"v", float("nan"), 0.0)
    assert store.put(key(1), b"v", 1.0, 0.0)
    assert store.remove(key(1)) and not store.remove(key(1))
    store.put(key(2), b"v", 1.0, 0.0)
    store.clear()
    assert len(store) == 0 and store.bytes_used == 0
    assert "CacheStore(max_bytes=1000" in repr(store)


def test_store_is_safe_across_threads() -> None:
    store = CacheStore(200 * (100 + OVERHEAD), 150)

    def work(t: int) -> None:
        for i in range(2000):
            k = bytes([t, i % 251]) * 8
            store.put(k, b"v" * 100, 60.0, 0.0)
            store.get(k, 0.0)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(store) <= 150 and store.bytes_used <= store.max_bytes
    assert store.stats()["stores"] == 8000
