"""Back-off and score of makers that do not answer takes (``trading.standing``, pure)."""

import pytest

from p2pgrid.trading.standing import BackoffRule, PeerStanding

SILENT, OTHER = b"s" * 32, b"o" * 32
RULE = BackoffRule(base_s=5.0, cap_s=300.0, half_life_s=600.0)


def test_the_back_off_doubles_with_each_silence_in_quick_succession_up_to_the_cap():
    standing = PeerStanding(RULE)
    backoffs = [standing.on_silence(SILENT, 0.0) for _ in range(9)]
    assert backoffs == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    assert standing.is_backing_off(SILENT, 299.9) and not standing.is_backing_off(SILENT, 300.0)
    assert not standing.is_backing_off(OTHER, 0.0)
    assert standing.backing_off(1.0) == frozenset({SILENT})


def test_each_silence_lowers_the_score_and_only_time_heals_it():
    standing = PeerStanding(RULE)
    assert standing.score(SILENT, 0.0) == 0.0
    standing.on_silence(SILENT, 0.0)
    standing.on_silence(SILENT, 0.0)
    assert standing.score(SILENT, 0.0) == -2.0
    assert standing.score(SILENT, 600.0) == pytest.approx(-1.0)     # one half-life later
    assert standing.silences(SILENT) == 2
    assert standing.scores(600.0) == {SILENT: pytest.approx(-1.0)}


def test_a_silence_long_after_the_last_one_backs_off_briefly_again():
    standing = PeerStanding(RULE)
    for _ in range(4):
        standing.on_silence(SILENT, 0.0)
    later = 6_000.0                                            # ten half-lives: the penalty is ~0.004
    assert standing.on_silence(SILENT, later) == pytest.approx(5.0, rel=0.01)


def test_a_maker_whose_record_has_faded_is_forgotten():
    standing = PeerStanding(RULE)
    standing.on_silence(SILENT, 0.0)
    standing.forget_recovered(10.0)
    assert standing.score(SILENT, 10.0) < 0                     # still remembered
    standing.forget_recovered(600.0 * 7)                       # 1/128 < forget_below
    assert standing.scores(600.0 * 7) == {}


def test_the_back_off_is_a_function_of_the_penalty():
    assert RULE.backoff_s(0.0) == 0.0
    assert RULE.backoff_s(1.0) == 5.0
    assert RULE.backoff_s(1.5) == pytest.approx(5.0 * 2 ** 0.5)
    assert RULE.backoff_s(1e9) == 300.0
