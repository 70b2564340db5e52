"""The session's turn rate limit (pipeline/rate_limit.py), in virtual time."""

from __future__ import annotations

from pipeline.rate_limit import RateLimit


def test_at_most_so_many_in_any_minute():
    limit = RateLimit(per_minute=3)
    assert [limit.allow(t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert limit.allow(59.9) is False  # the first still counts
    assert limit.allow(60.5) is True  # it has left the minute
    assert limit.allow(60.6) is False  # a refused turn took no place: 1, 2 and 60.5 are in


def test_a_refused_turn_does_not_count():
    limit = RateLimit(per_minute=1)
    assert limit.allow(0.0) is True
    assert all(limit.allow(t) is False for t in (10.0, 20.0, 30.0))
    assert limit.allow(60.1) is True
