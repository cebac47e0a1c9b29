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
