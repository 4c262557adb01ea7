"""Model-based checks of the cache (client + fake server), and concurrent writers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from flamepy_fake._cache._server import FakeObjectCache
from flamepy_runner import FlameConfig, NotFoundError
from flamepy_runner._cache import CacheClient, ObjectRef

SESSIONS = ["s1", "s2"]
APPS = ["app", "other"]
payloads = st.one_of(
    st.integers(),
    st.text(max_size=20),
    st.binary(max_size=64),
    st.lists(st.integers(), max_size=5),
    st.none(),
)
names = st.text(alphabet="abcxyz0-._ ", min_size=1, max_size=8).filter(lambda s: ".." not in s)


def fold(base: Any, patches: list[Any]) -> list[Any]:
    return [base, *patches]


@dataclass
class Model:
    version: int
    base: Any
    patches: list[Any] = field(default_factory=list)


class CacheMachine(RuleBasedStateMachine):
    """Writes through one client, reads through another (exercising its incremental fetch)."""

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.cache = FakeObjectCache().start()
        config = FlameConfig(cache_endpoint=self.cache.endpoint, timeout=20)
        self.writer = CacheClient(config)
        self.reader = CacheClient(config)
        self.model: dict[str, Model] = {}
        # Highest version handed out per key since its last delete.
        self.high: dict[str, int] = {}
        # Keys deleted (by the writer) while the reader may hold a copy. Versions restart at 1
        # after a delete, so if the key is written again the reader's "<key>:<v>" can match the
        # new object's version and be answered "not modified": a limit of the protocol (real
        # cache and flamepy alike). Such reads must ask with version 0 until refreshed.
        self.reader_stale: set[str] = set()

    def teardown(self) -> None:
        self.writer.close()
        self.reader.close()
        self.cache.stop()

    def _written(self, key: str, version: int) -> None:
        assert version > self.high.get(key, 0), f"{key}: version {version} after {self.high.get(key)}"
        self.high[key] = version
        assert self.cache.store.version(key) == version

    def _ref(self, key: str) -> ObjectRef:
        return ObjectRef(self.cache.endpoint, key, self.model[key].version if key in self.model else 1)

    @initialize(target=keys)
    def seed(self) -> str:
        ref = self.writer.put_object("app/s1", "seed")
        self.model[ref.key] = Model(1, "seed")
        self._written(ref.key, 1)
        return ref.key

    @rule(target=keys, app=st.sampled_from(APPS), session=st.sampled_from(SESSIONS), value=payloads)
    def put(self, app: str, session: str, value: Any) -> str:
        ref = self.writer.put_object(f"{app}/{session}", value)
        assert ref.version == 1 and ref.key.startswith(f"{app}/{session}/")
        self.model[ref.key] = Model(1, value)
        self._written(ref.key, 1)
        return ref.key

    @rule(
        target=keys, app=st.sampled_from(APPS), session=st.sampled_from(SESSIONS), name=names, value=payloads
    )
    def put_full_key(self, app: str, session: str, name: str, value: Any) -> str:
        key = f"{app}/{session}/{name}"
        ref = self.writer.update_object(ObjectRef(self.cache.endpoint, key, 0), value)
        expected = self.model[key].version + 1 if key in self.model else 1
        assert (ref.key, ref.version) == (key, expected)
        self.model[key] = Model(expected, value)
        self._written(key, expected)
        return key

    @rule(key=keys, value=payloads)
    def update(self, key: str, value: Any) -> None:
        ref = self.writer.update_object(self._ref(key), value)
        expected = self.model[key].version + 1 if key in self.model else 1
        assert ref.version == expected
        self.model[key] = Model(expected, value)
        self._written(key, expected)

    @rule(key=keys, delta=payloads)
    def patch(self, key: str, delta: Any) -> None:
        if key not in self.model:
            with pytest.raises(NotFoundError):
                self.writer.patch_object(self._ref(key), delta)
            return
        ref = self.writer.patch_object(self._ref(key), delta)
        obj = self.model[key]
        assert ref.version == obj.version + 1
        obj.version = ref.version
        obj.patches.append(delta)
        self._written(key, ref.version)

    @rule(key=keys, fresh=st.booleans(), folded=st.booleans())
    def get(self, key: str, fresh: bool, folded: bool) -> None:
        ref = self._ref(key)
        if fresh or key in self.reader_stale:
            ref = ref.with_version(0)
        if key not in self.model:
            with pytest.raises(NotFoundError):
                self.reader.get_object(ref)
            return
        obj = self.model[key]
        if folded:
            assert self.reader.get_object(ref, fold) == [obj.base, *obj.patches]
        else:
            assert self.reader.get_object(ref) == obj.base
        self.reader_stale.discard(key)

    @rule(key=keys, scope=st.sampled_from(["object", "session", "app"]))
    def delete(self, key: str, scope: str) -> None:
        app, session, _ = key.split("/")
        pattern = {"object": key, "session": f"{app}/{session}", "app": f"{app}/*"}[scope]
        self.writer.delete_objects(pattern)
        for k in list(self.model):
            k_app, k_session, _ = k.split("/")
            if (
                k == key
                or (scope == "session" and (k_app, k_session) == (app, session))
                or (scope == "app" and k_app == app)
            ):
                del self.model[k]
                self.high.pop(k, None)
                self.reader_stale.add(k)

    @invariant()
    def server_matches_model(self) -> None:
        assert set(self.cache.store.list_keys()) == set(self.model)


CacheMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=20, deadline=None)
TestCacheMachine = CacheMachine.TestCase


# --------------------------------------------------------------------------- concurrency


@pytest.fixture(name="cache")
def _cache() -> Iterator[FakeObjectCache]:
    with FakeObjectCache() as cache:
        yield cache


def _run_threads(count: int, target: Any) -> None:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # surfaced below, on the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_concurrent_patchers_lose_nothing(cache: FakeObjectCache) -> None:
    config = FlameConfig(cache_endpoint=cache.endpoint, timeout=20)
    shared = CacheClient(config)
    ref = shared.put_object("app/ssn", "base")
    versions: list[int] = []
    lock = threading.Lock()

    def patcher(n: int) -> None:
        # Half the threads share one client (thread safety), the others bring their own.
        client = shared if n % 2 else CacheClient(config)
        try:
            for i in range(15):
                got = client.patch_object(ref, (n, i))
                with lock:
                    versions.append(got.version)
        finally:
            if client is not shared:
                client.close()

    _run_threads(6, patcher)
    assert sorted(versions) == list(range(2, 2 + 6 * 15))
    folded = shared.get_object(ref.with_version(0), fold)
    assert folded[0] == "base"
    assert sorted(folded[1:]) == [(n, i) for n in range(6) for i in range(15)]
    # Each writer's patches stay in its own order.
    for n in range(6):
        assert [i for m, i in folded[1:] if m == n] == list(range(15))
    shared.close()


def test_concurrent_updates_each_get_a_distinct_version(cache: FakeObjectCache) -> None:
    config = FlameConfig(cache_endpoint=cache.endpoint, timeout=20)
    with CacheClient(config) as client:
        ref = client.put_object("app/ssn", ("init", 0))
        results: list[tuple[int, Any]] = []
        lock = threading.Lock()

        def updater(n: int) -> None:
            for i in range(10):
                got = client.update_object(ref, (n, i))
                with lock:
                    results.append((got.version, (n, i)))

        _run_threads(4, updater)
        assert sorted(v for v, _ in results) == list(range(2, 42))
        # The stored value is the one written with the highest version: no write went missing.
        assert client.get_object(ref.with_version(0)) == max(results)[1]
