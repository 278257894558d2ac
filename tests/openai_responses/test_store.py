"""The in-memory store of responses: bounded in count and bytes, with a time to live."""

from twisted.internet.task import Clock

from claude_proxy.openai_responses.parse import Context
from claude_proxy.openai_responses.store import ResponseStore

TURNS = Context(("sys",), (("user", ({"type": "text", "text": "hi"},)),))


def response(n, pad=""):
    return {"id": f"resp_{n}", "object": "response", "pad": pad}


def test_put_get_delete():
    store = ResponseStore(Clock())
    store.put(response(1), TURNS)
    assert store.get("resp_1").response == response(1)
    assert store.get("resp_1").context == TURNS
    assert store.get("resp_2") is None
    assert store.delete("resp_1") and not store.delete("resp_1")
    assert store.get("resp_1") is None


def test_bounded_in_count_oldest_first():
    store = ResponseStore(Clock(), max_responses=2)
    for n in range(3):
        store.put(response(n), TURNS)
    assert len(store) == 2 and store.get("resp_0") is None and store.get("resp_2")


def test_bounded_in_bytes():
    store = ResponseStore(Clock(), max_bytes=1000)
    store.put(response(1, "x" * 450), TURNS)
    store.put(response(2, "x" * 450), TURNS)
    assert store.get("resp_1") is None and store.get("resp_2")
    store.put(response(3, "x" * 2000), TURNS)  # bigger than the store: not kept
    assert store.get("resp_3") is None and store.get("resp_2")


def test_time_to_live():
    clock = Clock()
    store = ResponseStore(clock, ttl=60)
    store.put(response(1), TURNS)
    clock.advance(30)
    store.put(response(2), TURNS)
    clock.advance(31)
    assert store.get("resp_1") is None and store.get("resp_2")
    clock.advance(30)
    assert store.get("resp_2") is None and len(store) == 0


class Written:
    """A Backing that keeps what the store wrote."""

    def __init__(self):
        self.rows = {}

    def saved(self, response_id, at, response, context):
        self.rows[response_id] = (at, response, context)

    def dropped(self, response_id):
        self.rows.pop(response_id, None)


def test_a_backing_mirrors_the_store_and_refills_a_new_one():
    clock = Clock()
    written = Written()
    store = ResponseStore(clock, max_responses=2, backing=written)
    for n in range(3):
        store.put(response(n), TURNS)
        clock.advance(1)
    store.delete("resp_1")
    assert list(written.rows) == ["resp_2"]  # the evicted and the deleted left it too

    again = ResponseStore(clock, backing=written)
    for at, text, context in written.rows.values():
        again.restore(at, text, context)
    assert again.get("resp_2").response == response(2)
    assert again.get("resp_2").context == TURNS
    assert again.get("resp_2").at == 2.0
    assert list(written.rows) == ["resp_2"]  # restoring writes nothing back


def test_restored_responses_keep_their_age():
    clock = Clock()
    written = Written()
    ResponseStore(clock, backing=written).put(response(1), TURNS)
    clock.advance(61)
    again = ResponseStore(clock, ttl=60, backing=written)
    again.restore(*written.rows["resp_1"])
    assert again.get("resp_1") is None and not written.rows
