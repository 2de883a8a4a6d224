"""The one registry of host writers (jaxsinks._io.registry): ids, how writers ended, attachments."""

import threading

from jaxsinks._io.registry import Registry


def test_ids_are_monotonic_and_never_reused():
    registry = Registry()
    first, second = registry.add("a"), registry.add("b")
    registry.retire(first, "closed")
    third = registry.add("c")
    assert (first, second, third) == (1, 2, 3)
    assert registry.get(first) is None and registry.get(third) == "c"
    assert registry.ended(first) == "closed" and registry.ended(second) is None
    assert registry.live() == ["b", "c"]


def test_find_sees_only_live_writers():
    registry = Registry()
    ids = [registry.add(name) for name in ("x", "y", "z")]
    registry.retire(ids[1], "replaced")
    assert registry.find(lambda w: w == "y") is None
    assert registry.find(lambda w: w in ("y", "z")) == "z"
    assert registry.ended(ids[1]) == "replaced"


def test_attachments_outlive_the_writer_until_detached():
    registry = Registry()
    writer_id = registry.add("w")
    registry.attach(writer_id, "memory", [1, 2, 3])
    registry.retire(writer_id, "closed")
    assert registry.attached(writer_id, "memory") == [1, 2, 3]
    assert registry.attached(writer_id, "other") is None
    assert registry.detach(writer_id, "memory") == [1, 2, 3]
    assert registry.detach(writer_id, "memory") is None


def test_detach_where_removes_only_matching_attachments_of_that_key():
    registry = Registry()
    a, b = registry.add("a"), registry.add("b")
    registry.attach(a, "hook", "run-1")
    registry.attach(b, "hook", "run-2")
    registry.attach(a, "memory", "run-1")
    assert registry.detach_where("hook", lambda v: v == "run-1") == ["run-1"]
    assert registry.attached(a, "hook") is None and registry.attached(b, "hook") == "run-2"
    assert registry.attached(a, "memory") == "run-1"


def test_ids_are_unique_across_threads():
    registry = Registry()
    ids: list[int] = []
    lock = threading.Lock()

    def add_many():
        mine = [registry.add(object()) for _ in range(500)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=add_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 2001))
