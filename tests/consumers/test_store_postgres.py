"""PostgresStore on a real PostgreSQL: group commit, cancellation at every await, and replicas that race."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from consumers import Transaction
from consumers.event import Event
from consumers.store.postgres import Connection, PostgresStore, adapt
from tests.consumers.test_store import SCHEMA, Writes, apply, event

pytestmark = pytest.mark.postgres


def committed(url: str, namespace: str, sql: str = "SELECT name FROM seen ORDER BY name") -> list[tuple[Any, ...]]:
    """What another connection sees: only what was committed."""
    with psycopg.connect(url, autocommit=True) as other:
        other.execute(f'SET search_path TO "{namespace}"')  # type: ignore[arg-type]  # a test's own name
        return other.execute(sql).fetchall()  # type: ignore[arg-type]


def store_for(url: str, namespace: str, **options: Any) -> PostgresStore:
    """One connection (one lane) unless asked: the tests below look at its connection and batch."""
    return PostgresStore(url, namespace=namespace, schema=SCHEMA, **{"connections": 1, **options})


@pytest.fixture
async def batched(postgres_url: str, pg_namespace: str) -> AsyncIterator[PostgresStore]:
    store = store_for(postgres_url, pg_namespace, batch_size=4, batch_max_wait=0.05)
    await store.open()
    yield store
    await store.close()


def intercept(monkeypatch: pytest.MonkeyPatch, statement: str) -> asyncio.Event:
    """An event set when a connection sends `statement` (then it is sent)."""
    started = asyncio.Event()
    real: Callable[..., None] = Connection._send

    def send(self: Connection, query: str, *args: Any, **kwargs: Any) -> None:
        if query == statement:
            started.set()
        real(self, query, *args, **kwargs)

    monkeypatch.setattr(Connection, "_send", send)
    return started


@pytest.mark.parametrize(("written", "expected"), [
    ("SELECT ? , '?', \"a?\" -- what?\n", "SELECT $1 , '?', \"a?\" -- what?\n"),
    ("INSERT INTO t VALUES (?, ?) -- ?\nON CONFLICT DO UPDATE SET b = ?",
     "INSERT INTO t VALUES ($1, $2) -- ?\nON CONFLICT DO UPDATE SET b = $3"),
])
def test_question_marks_become_numbered_placeholders_outside_quotes(written: str, expected: str) -> None:
    assert adapt(written) == expected


async def test_a_full_batch_commits_once_and_only_then_do_its_events_return(
        postgres_url: str, pg_namespace: str) -> None:
    store = store_for(postgres_url, pg_namespace, batch_size=4, batch_max_wait=60)
    await store.open()
    handler = Writes()
    first = [asyncio.create_task(apply(store, event(name=n), handler)) for n in ["a", "b", "c"]]
    while store.pending < 3:
        await asyncio.sleep(0.001)
    assert not any(task.done() for task in first)
    assert committed(postgres_url, pg_namespace) == []
    assert await apply(store, event(name="d"), handler) == "applied"
    assert [await task for task in first] == ["applied"] * 3
    assert committed(postgres_url, pg_namespace) == [("a",), ("b",), ("c",), ("d",)]
    await store.close()


async def test_a_failing_handler_rolls_back_only_its_own_writes(
        batched: PostgresStore, postgres_url: str, pg_namespace: str) -> None:
    async def fails(tx: Transaction) -> None:
        await tx.execute("INSERT INTO seen VALUES ('x', 'broken')")
        raise OSError("disk on fire")

    good = asyncio.create_task(apply(batched, event(name="good"), Writes()))
    while batched.pending < 1:  # "good" is in the open batch
        await asyncio.sleep(0.001)
    with pytest.raises(OSError, match="disk on fire"):
        await batched.apply(event(name="bad"), fails)
    assert await good == "applied"
    assert batched.lanes[0].rebuilds == 1  # rolled back, "good" applied again without "bad"
    assert committed(postgres_url, pg_namespace) == [("good",)]
    assert await apply(batched, event(name="bad"), Writes()) == "applied"


async def test_a_failing_statement_rolls_back_only_its_event(
        batched: PostgresStore, postgres_url: str, pg_namespace: str) -> None:
    async def bad_sql(tx: Transaction) -> None:
        await tx.execute("INSERT INTO seen VALUES ('x', 'partial')")
        await tx.execute("INSERT INTO no_such_table VALUES (1)")

    good = asyncio.create_task(apply(batched, event(name="good"), Writes()))
    while batched.pending < 1:  # "good" is in the open batch
        await asyncio.sleep(0.001)
    with pytest.raises(psycopg.errors.UndefinedTable):
        await batched.apply(event(name="bad"), bad_sql)
    assert await good == "applied"  # the transaction was not left aborted: its COMMIT went through
    assert batched.lanes[0].rebuilds == 1
    assert committed(postgres_url, pg_namespace) == [("good",)]


async def test_inside_one_batch_a_resend_is_a_duplicate_and_an_older_event_is_stale(
        batched: PostgresStore, postgres_url: str, pg_namespace: str) -> None:
    newer = event("2025-03-18T22:00:00", name="newer")
    older = event("2025-03-18T21:00:00", name="older")
    handler = Writes()
    verdicts = await asyncio.gather(apply(batched, newer, handler), apply(batched, newer, handler),
                                    apply(batched, older, handler))
    assert verdicts == ["applied", "duplicate", "stale"]
    assert committed(postgres_url, pg_namespace) == [("newer",)]
    assert committed(postgres_url, pg_namespace, "SELECT message_id FROM consumer_applied") == [(newer.message_id,)]


async def test_a_task_cancelled_while_begin_runs_leaves_the_connection_usable(
        batched: PostgresStore, postgres_url: str, pg_namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    started = intercept(monkeypatch, "BEGIN")
    cancelled = asyncio.create_task(apply(batched, event(name="cancelled"), Writes()))
    await started.wait()  # BEGIN is on its way to the server
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    connection = batched.lanes[0].connection
    assert connection is not None and not connection.is_in_transaction()
    assert await apply(batched, event(name="next"), Writes()) == "applied"
    assert committed(postgres_url, pg_namespace) == [("next",)]


async def test_a_delivery_cancelled_inside_its_handler_leaves_the_rest_of_the_batch(
        batched: PostgresStore, postgres_url: str, pg_namespace: str) -> None:
    entered = asyncio.Event()

    async def hangs(tx: Transaction) -> None:
        await tx.execute("INSERT INTO seen VALUES ('x', 'cancelled')")
        entered.set()
        await tx.execute("SELECT pg_sleep(30)")  # cancelled while the server runs it

    first = asyncio.create_task(apply(batched, event(name="before"), Writes()))
    while batched.pending < 1:
        await asyncio.sleep(0.001)
    cancelled = asyncio.create_task(batched.apply(event(name="cancelled"), hangs))
    await entered.wait()
    await asyncio.sleep(0.05)  # pg_sleep is running
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await apply(batched, event(name="after"), Writes()) == "applied"
    assert await first == "applied"
    assert committed(postgres_url, pg_namespace) == [("after",), ("before",)]
    assert await apply(batched, event(name="cancelled"), Writes()) == "applied"  # never recorded


async def test_a_committer_cancelled_during_commit_still_answers_the_batch(
        postgres_url: str, pg_namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_for(postgres_url, pg_namespace, batch_size=2, batch_max_wait=60)
    await store.open()
    waiting = asyncio.create_task(apply(store, event(name="one"), Writes()))
    while store.pending < 1:
        await asyncio.sleep(0.001)
    started = intercept(monkeypatch, "COMMIT")
    batch = store.lanes[0].batch
    assert batch is not None
    filling = asyncio.create_task(apply(store, event(name="two"), Writes()))  # fills the batch: COMMIT
    await started.wait()
    assert batch.committing is not None
    batch.committing.cancel()  # the task that runs the commit, while COMMIT is on its way
    filling.cancel()
    assert await waiting == "applied"  # COMMIT's own answer reached the batch
    with contextlib.suppress(asyncio.CancelledError):
        await filling
    assert committed(postgres_url, pg_namespace) == [("one",), ("two",)]
    handler = Writes()
    assert await asyncio.gather(apply(store, event(name="three"), handler),
                                apply(store, event(name="four"), handler)) == ["applied", "applied"]
    await store.close()


async def test_close_commits_what_is_pending(postgres_url: str, pg_namespace: str) -> None:
    store = store_for(postgres_url, pg_namespace, batch_size=100, batch_max_wait=60)
    await store.open()
    pending = asyncio.create_task(apply(store, event(name="pending"), Writes()))
    while store.pending < 1:
        await asyncio.sleep(0.001)
    await store.close()
    assert await pending == "applied"
    assert committed(postgres_url, pg_namespace) == [("pending",)]


async def test_a_commit_that_fails_fails_every_event_of_its_batch_and_the_store_goes_on(
        postgres_url: str, pg_namespace: str) -> None:
    schema = SCHEMA + ("CREATE TABLE IF NOT EXISTS parent (id TEXT PRIMARY KEY);"
                       "CREATE TABLE IF NOT EXISTS child (parent_id TEXT REFERENCES parent (id) "
                       "DEFERRABLE INITIALLY DEFERRED);")
    store = PostgresStore(postgres_url, namespace=pg_namespace, schema=schema, batch_size=2, batch_max_wait=60)
    await store.open()

    async def orphan(tx: Transaction) -> None:  # passes its savepoint; the deferred check fails at COMMIT
        await tx.execute("INSERT INTO child VALUES ('nobody')")

    good = asyncio.create_task(apply(store, event(name="good"), Writes()))
    while store.pending < 1:
        await asyncio.sleep(0.001)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await store.apply(event(name="orphan"), orphan)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await good
    assert committed(postgres_url, pg_namespace) == []
    handler = Writes()
    done = await asyncio.gather(apply(store, event(name="good"), handler), apply(store, event(name="next"), handler))
    assert done == ["applied", "applied"]
    assert committed(postgres_url, pg_namespace) == [("good",), ("next",)]
    await store.close()


async def test_a_lost_connection_fails_its_batch_and_the_next_event_reconnects(
        batched: PostgresStore, postgres_url: str, pg_namespace: str) -> None:
    assert await apply(batched, event(name="before"), Writes()) == "applied"
    assert batched.lanes[0].connection is not None
    pid = batched.lanes[0].connection.backend_pid()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(Exception):  # noqa: B017  # psycopg's error depends on when it read the server's goodbye
        await apply(batched, event(name="lost"), Writes())
    assert await apply(batched, event(name="lost"), Writes()) == "applied"  # its retry, on a new connection
    assert committed(postgres_url, pg_namespace) == [("before",), ("lost",)]


# --- several replicas on one database -------------------------------------------------------------------


@pytest.fixture
async def replicas(postgres_url: str, pg_namespace: str) -> AsyncIterator[list[PostgresStore]]:
    stores = [store_for(postgres_url, pg_namespace, batch_size=8, batch_max_wait=0.002) for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))  # the migrations race too
    yield stores
    for store in stores:
        await store.close()


class Latest:
    """A handler that keeps the product's name, as the inventory service keeps its stock."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, current: Event, tx: Transaction) -> None:
        name = str((current.product or {}).get("Name"))
        await tx.execute("INSERT INTO seen VALUES (?, ?)", (current.message_id, name))
        await tx.execute("INSERT INTO latest (entity, name) VALUES (?, ?) ON CONFLICT (entity) DO UPDATE SET "
                         "name = excluded.name", (current.entity, name))
        self.calls.append(name)


async def test_replicas_racing_on_one_product_apply_each_event_once_and_the_newest_wins(
        replicas: list[PostgresStore], postgres_url: str, pg_namespace: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE TABLE "{pg_namespace}".latest (entity TEXT PRIMARY KEY, name TEXT)')  # type: ignore[arg-type]
    minutes = list(range(60))
    newest = event("2025-03-18T22:59:00", name="m59")
    events = [event(f"2025-03-18T22:{m:02d}:00", name=f"m{m}") for m in minutes[:-1]]
    events.insert(len(events) // 3, newest)  # the newest arrives early, the rest out of order around it
    events.reverse()
    handler = Latest()
    # Every event goes to every replica, concurrently: each is applied once, by one of them.
    verdicts = await asyncio.gather(*(apply(store, current, handler) for current in events for store in replicas))
    assert committed(postgres_url, pg_namespace, "SELECT name FROM latest") == [("m59",)]
    applied_ids = committed(postgres_url, pg_namespace, "SELECT message_id FROM consumer_applied")
    seen = committed(postgres_url, pg_namespace, "SELECT message_id FROM seen")
    assert sorted(seen) == sorted(applied_ids)  # effect and record together, each message at most once
    assert len(seen) == len(set(seen)) == verdicts.count("applied")
    assert newest.message_id in {row[0] for row in seen}
    assert verdicts.count("applied") + verdicts.count("stale") + verdicts.count("duplicate") == len(verdicts)
    assert verdicts.count("applied") + verdicts.count("stale") >= len(events)  # each event decided at least once


async def test_replicas_locking_two_entities_in_opposite_orders_both_finish(
        postgres_url: str, pg_namespace: str) -> None:
    one, two = (store_for(postgres_url, pg_namespace, batch_size=100, batch_max_wait=60) for _ in range(2))
    await one.open()
    await two.open()
    x = [make(1, "x1"), make(1, "x2")]
    y = [make(2, "y1"), make(2, "y2")]
    handler = Writes()
    # one holds X, two holds Y; then each wants the other's: PostgreSQL picks a deadlock victim.
    first = [asyncio.create_task(apply(one, x[0], handler)), asyncio.create_task(apply(two, y[0], handler))]
    while one.pending < 1 or two.pending < 1:
        await asyncio.sleep(0.001)
    crossed = [asyncio.create_task(apply(one, y[1], handler)), asyncio.create_task(apply(two, x[1], handler))]
    await asyncio.sleep(0.1)
    finishing = [asyncio.create_task(one.close()), asyncio.create_task(two.close())]  # commit when they can
    results = await asyncio.wait_for(asyncio.gather(*first, *crossed), 30)
    await asyncio.gather(*finishing)
    assert one.conflicts + two.conflicts >= 1
    # The victim's batch is applied again after the other replica went ahead: its older event may then meet
    # the newer one, committed, and count as stale. Either way the newest wins and nothing is written twice.
    verdicts = dict(zip(("x1", "y1", "y2", "x2"), results, strict=True))
    assert verdicts["x2"] == verdicts["y2"] == "applied"
    assert set(verdicts.values()) <= {"applied", "stale"}
    assert committed(postgres_url, pg_namespace) == [(name,) for name in sorted(verdicts)
                                                     if verdicts[name] == "applied"]
    assert committed(postgres_url, pg_namespace, "SELECT entity, event_date FROM consumer_entity ORDER BY 1") \
        == [(x[1].entity, x[1].date_key), (y[1].entity, y[1].date_key)]


def make(product: int, name: str) -> Event:
    from tests.consumers.conftest import product_body

    body = product_body("2025-03-18T21:00:00" if name.endswith("1") else "2025-03-18T21:00:01", Name=name)
    body["Product"]["ProductID"] = 3451582911247567000 + product
    body["EventObjectId"] = 3451582911247567000 + product
    from consumers.testing import make_event

    return make_event(body)


# --- pipelined statements: answers read at the batch's end ------------------------------------------------


async def test_a_failing_write_is_found_at_the_batch_end_and_fails_only_its_own_event(
        batched: PostgresStore, postgres_url: str, pg_namespace: str) -> None:
    async def good(tx: Transaction) -> None:
        await tx.write("INSERT INTO seen VALUES (?, ?)", ("g", "good"))

    async def bad(tx: Transaction) -> None:  # not answered until the batch's end: the handler returns
        await tx.write("INSERT INTO seen VALUES ('x', 'partial')")
        await tx.write_many("INSERT INTO no_such_table VALUES (?)", [(1,), (2,)])

    async def after(tx: Transaction) -> None:
        await tx.write("INSERT INTO seen VALUES (?, ?)", ("a", "after"))

    results = await asyncio.gather(batched.apply(event(name="good"), good), batched.apply(event(name="bad"), bad),
                                   batched.apply(event(name="after"), after), return_exceptions=True)
    assert results[0] == results[2] == "applied"
    assert isinstance(results[1], psycopg.errors.UndefinedTable)
    assert batched.lanes[0].rebuilds == 1  # applied again carefully, which pinned the error on "bad"
    assert committed(postgres_url, pg_namespace) == [("after",), ("good",)]


async def test_a_duplicate_another_replica_committed_is_undone_after_its_handler_ran(
        postgres_url: str, pg_namespace: str) -> None:
    one, two = (store_for(postgres_url, pg_namespace, batch_size=2, batch_max_wait=60) for _ in range(2))
    await one.open()
    await two.open()
    resent, other = event(name="resent"), event("2025-03-18T21:20:00", name="other")
    handler = Writes()
    assert await asyncio.gather(apply(one, resent, handler), apply(one, event(name="filler"), handler)) \
        == ["applied", "applied"]
    # `two` has not seen it (no redelivery flag, nothing in its memory): its handler runs, optimistically.
    assert await asyncio.gather(apply(two, resent, handler), apply(two, other, handler)) \
        == ["duplicate", "applied"]
    assert two.lanes[0].rebuilds == 1
    assert committed(postgres_url, pg_namespace) == [("filler",), ("other",), ("resent",)]
    # The lane remembers what it committed: a resend to it now skips its handler from the start.
    calls = len(handler.names)
    third = event("2025-03-18T21:30:00", name="third")
    assert await asyncio.gather(apply(two, resent, handler), apply(two, third, handler)) == ["duplicate", "applied"]
    assert len(handler.names) == calls + 1 and two.lanes[0].rebuilds == 1
    await one.close()
    await two.close()


# --- the connection: libpq's pipeline mode driven directly -----------------------------------------------


async def test_parameters_of_every_supported_type_arrive_as_sent(batched: PostgresStore) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    await batched.query("CREATE TABLE kinds (t TEXT, i BIGINT, f DOUBLE PRECISION, b BOOLEAN, n TEXT, "
                        "d NUMERIC, raw BYTEA, at TIMESTAMPTZ, inf DOUBLE PRECISION, nan DOUBLE PRECISION, "
                        "ids BIGINT[])")
    moment = datetime(2025, 3, 18, 21, 14, 7, 347000, tzinfo=UTC)
    sent = ("it's ? a 'quote' ünï", 3451582911247567682, 0.1, True, None, Decimal("12.50"), b"\x00\xff",
            moment, float("inf"), float("nan"), [3451582911247567682, 1])

    async def insert(tx: Transaction) -> None:
        await tx.write("INSERT INTO kinds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", sent)

    assert await batched.apply(event(name="kinds"), insert) == "applied"
    [row] = await batched.query("SELECT t, i, f, b, n, d, raw, at, inf, nan, ids FROM kinds")
    assert row[:8] == (*sent[:6], sent[6], moment)
    assert row[8] == float("inf") and row[9] != row[9]  # NaN
    assert row[10] == [3451582911247567682, 1]
    assert await batched.query("SELECT count(*) FROM kinds WHERE i = ANY(?)", ([3451582911247567682, 2],)) == [(1,)]


async def test_an_unsupported_parameter_fails_its_event_with_what_to_pass_instead(batched: PostgresStore) -> None:
    async def sends_a_dict(tx: Transaction) -> None:
        await tx.write("INSERT INTO seen VALUES (?, ?)", ("x", {"Name": "Widget"}))

    with pytest.raises(TypeError, match=r"cannot adapt type 'dict'.*types: dict, str\); pass str, int"):
        await batched.apply(event(name="dict"), sends_a_dict)
    assert await apply(batched, event(name="next"), Writes()) == "applied"


async def test_a_statement_that_fails_to_prepare_is_prepared_again_on_its_next_use(batched: PostgresStore) -> None:
    for _ in range(2):  # not "prepared statement does not exist" the second time
        with pytest.raises(psycopg.errors.SyntaxError):
            await batched.query("SELEC 1")
    assert await batched.query("SELECT 1") == [(1,)]


async def test_past_the_prepared_limit_statements_run_unprepared(
        batched: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import consumers.store.postgres as module

    monkeypatch.setattr(module, "PREPARED_MAX", 3)
    found = [await batched.query(f"SELECT {n}") for n in range(8)]
    assert found == [[(n,)] for n in range(8)]
    connection = batched.lanes[0].connection
    assert connection is not None and len(connection._prepared) == 3


async def test_a_reader_cancelled_anywhere_leaves_the_answers_to_the_next(
        batched: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled halfway through the answers (at every point, one run each) or while it waits for the read
    lock: the next sync goes on from there, every answer lands where it belongs, and the error among them
    is raised exactly once."""
    real = Connection._result

    async def slow_result(self: Connection) -> Any:
        await asyncio.sleep(0)  # a point to be cancelled at, between any two answers
        return await real(self)

    monkeypatch.setattr(Connection, "_result", slow_result)
    connection = batched.lanes[0].connection
    assert connection is not None
    for steps in range(24):
        answers = [connection.send("SELECT $1::int", (n,)) for n in range(3)]
        connection.send("SELECT 1/0")
        first = asyncio.create_task(connection.sync())
        waiting = asyncio.create_task(connection.sync())  # waits for the read lock
        for _ in range(steps // 2):
            await asyncio.sleep(0)
        (first if steps % 2 else waiting).cancel()
        outcomes = list(await asyncio.gather(first, waiting, return_exceptions=True))
        try:
            await connection.sync()  # reads whatever the cancelled one left
        except psycopg.Error as exc:
            outcomes.append(exc)
        assert sum(isinstance(o, psycopg.errors.DivisionByZero) for o in outcomes) == 1, (steps, outcomes)
        assert [a.rows()[0][0] for a in answers] == [0, 1, 2]
    assert (await connection.run("SELECT 42")).rows() == [(42,)]
