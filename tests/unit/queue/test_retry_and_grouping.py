"""Backoff and per-domain grouping of the outbound queue."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whymail.queue.retry import retry_delay
from whymail.queue.spool import Spool
from whymail.queue.store import group_by_domain


def test_backoff_doubles_until_the_cap() -> None:
    rng = random.Random(1)
    delays = [retry_delay(n, base=60, cap=3600, rng=rng, jitter=0) for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


@given(attempts=st.integers(min_value=0, max_value=10_000), seed=st.integers())
def test_backoff_stays_within_jitter_of_the_capped_value(attempts: int, seed: int) -> None:
    delay = retry_delay(attempts, base=30, cap=7200, rng=random.Random(seed), jitter=0.2)
    nominal = min(7200, 30 * 2 ** min(max(0, attempts - 1), 30))
    assert nominal * 0.8 - 1e-9 <= delay <= nominal * 1.2 + 1e-9


def test_jitter_spreads_retries_of_messages_that_failed_together() -> None:
    rng = random.Random(7)
    assert len({round(retry_delay(3, base=60, cap=3600, rng=rng), 3) for _ in range(50)}) > 40


def test_recipients_are_grouped_by_domain_case_insensitively_and_once_each() -> None:
    groups = group_by_domain(["a@X.test", "b@x.test", "A@x.TEST", "c@y.test."])
    assert groups == {"x.test": ["a@X.test", "b@x.test"], "y.test": ["c@y.test."]}


def test_a_recipient_without_domain_is_refused() -> None:
    with pytest.raises(ValueError):
        group_by_domain(["nobody"])


def test_spool_paths_never_leave_the_spool(tmp_path) -> None:
    spool = Spool(tmp_path)
    good = spool.relative_path(uuid.uuid4())
    assert spool.path_of(good).is_relative_to(tmp_path / ".spool")
    for bad in ("../etc/passwd", ".spool/../../x", "/etc/passwd", ".spool/00/new/../../../x", good + "/x"):
        with pytest.raises(ValueError):
            spool.path_of(bad)


async def test_spool_write_read_remove(tmp_path) -> None:
    spool = Spool(tmp_path, fsync=False)
    delivery_id = uuid.uuid4()
    path = await spool.write(delivery_id, b"message\r\n")
    assert spool.read(path) == b"message\r\n"
    spool.remove([path])
    assert not spool.path_of(path).exists()
