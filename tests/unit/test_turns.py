"""Turns: green threads with the same key go one at a time, in the order they arrived."""
import random

import eventlet

from services.common.turns import Turns


def test_the_same_key_goes_one_at_a_time_in_order_of_arrival():
    turns, entered, inside = Turns(), [], []
    rng = random.Random(7)

    def work(n):
        with turns.turn("programme"):
            inside.append(n)
            assert len(inside) == 1  # nobody else holds this key's turn
            entered.append(n)
            eventlet.sleep(rng.uniform(0, 0.005))  # the holder waits for the database
            inside.remove(n)

    pool = eventlet.GreenPool(20)
    for n in range(20):
        pool.spawn(work, n)
    pool.waitall()
    assert entered == list(range(20))
    assert turns.waiting("programme") == 0


def test_other_keys_do_not_wait():
    turns, log = Turns(), []

    def slow():
        with turns.turn("a"):
            log.append("a starts")
            eventlet.sleep(0.05)
            log.append("a ends")

    def quick():
        with turns.turn("b"):
            log.append("b")

    first = eventlet.spawn(slow)
    second = eventlet.spawn(quick)
    first.wait()
    second.wait()
    assert log == ["a starts", "b", "a ends"]


def test_a_turn_ends_when_its_holder_fails():
    turns, entered = Turns(), []

    def fails():
        with turns.turn("k"):
            entered.append("fails")
            eventlet.sleep(0)
            raise RuntimeError("database gone")

    def next_one():
        with turns.turn("k"):
            entered.append("next")

    broken = eventlet.spawn(fails)
    after = eventlet.spawn(next_one)
    try:
        broken.wait()
    except RuntimeError:
        pass
    after.wait()
    assert entered == ["fails", "next"]


def test_a_group_commit_handles_what_queued_up_in_one_go_in_order():
    from services.common.turns import GroupCommit

    group, handled = GroupCommit(), []

    def handle_all(items):
        handled.append(list(items))
        eventlet.sleep(0.01)  # the transaction takes a while; others queue up meanwhile
        return [item * 10 for item in items]

    results = {}

    def worker(n):
        results[n] = group.run("programme", n, handle_all)

    pool = eventlet.GreenPool(30)
    for n in range(30):
        pool.spawn(worker, n)
    pool.waitall()
    assert results == {n: n * 10 for n in range(30)}
    assert [item for batch in handled for item in batch] == list(range(30))  # in order
    assert group.batches == len(handled) < 30 and len(handled) >= 2
    assert group.run("programme", 99, handle_all) == 990  # nothing is left waiting


def test_a_bad_item_fails_only_itself():
    from services.common.turns import GroupCommit

    group, handled = GroupCommit(), []

    def handle_all(items):
        handled.append(list(items))
        eventlet.sleep(0.01)
        if 3 in items:
            raise ValueError("bad item")
        return items

    outcomes = {}

    def worker(n):
        try:
            outcomes[n] = group.run("k", n, handle_all)
        except ValueError as exc:
            outcomes[n] = str(exc)

    pool = eventlet.GreenPool(10)
    for n in range(8):
        pool.spawn(worker, n)
    pool.waitall()
    assert outcomes == {0: 0, 1: 1, 2: 2, 3: "bad item", 4: 4, 5: 5, 6: 6, 7: 7}
    assert [3] in handled  # tried alone after its batch failed


def test_a_group_commit_of_another_key_does_not_wait():
    from services.common.turns import GroupCommit

    group, log = GroupCommit(), []

    def slow(items):
        log.append("a starts")
        eventlet.sleep(0.05)
        log.append("a ends")
        return items

    def quick(items):
        log.append("b")
        return items

    first = eventlet.spawn(group.run, "a", 1, slow)
    second = eventlet.spawn(group.run, "b", 2, quick)
    assert (first.wait(), second.wait()) == (1, 2)
    assert log == ["a starts", "b", "a ends"]
