"""Pool shares (pure accounting, not ledger-backed yet): entry conditions, lock-up, exact fee split."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.invest import (
    ShareBook, ShareRejected, ShareTerms, distribute_fees, fee_income_per_share, join_pool, leave_pool, lp_statement,
)

HOST, LP1, LP2 = b"h" * 32, b"a" * 32, b"b" * 32
TERMS = ShareTerms(share_price_uc=1_000_000, min_shares=2, max_shares_total=10, lockup_s=100)


def test_fees_split_pro_rata_by_shares():
    book = join_pool(join_pool(ShareBook(HOST, TERMS), LP1, 3_000_000, 0), LP2, 2_500_000, 0)
    assert book.holdings[LP2].shares == 2        # whole shares only (the change is not taken)
    book = distribute_fees(book, 1_000)
    assert book.holdings[LP1].fees_uc == 600 and book.holdings[LP2].fees_uc == 400
    assert fee_income_per_share(book) == 200
    st_ = lp_statement(book, LP1)
    assert st_["share_of_pool"] == pytest.approx(0.6) and st_["ledger_backed"] is False


@pytest.mark.parametrize("lp, deposit, why", [(LP1, 1_999_999, "minimum"), (HOST, 5_000_000, "host")])
def test_entry_conditions_are_enforced(lp, deposit, why):
    with pytest.raises(ShareRejected, match=why):
        join_pool(ShareBook(HOST, TERMS), lp, deposit, 0)


def test_the_share_cap_is_enforced():
    book = join_pool(ShareBook(HOST, TERMS), LP1, 9_000_000, 0)
    with pytest.raises(ShareRejected, match="left"):
        join_pool(book, LP2, 2_000_000, 0)


def test_shares_are_locked_up():
    book = join_pool(ShareBook(HOST, TERMS), LP1, 2_000_000, 50)
    with pytest.raises(ShareRejected, match="locked"):
        leave_pool(book, LP1, 149)
    rest, paid = leave_pool(book, LP1, 150)
    assert paid == 2_000_000 and rest.total_shares == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(2, 5), min_size=0, max_size=2), st.lists(st.integers(0, 10**9), max_size=5),
       st.floats(0.0, 1.0))
def test_fee_parts_add_up_to_the_fees_exactly(shares, fees, lp_share):
    book = ShareBook(HOST, TERMS)
    for lp, n in zip((LP1, LP2), shares):
        book = join_pool(book, lp, n * TERMS.share_price_uc, 0)
    for fee in fees:
        book = distribute_fees(book, fee, lp_share)
    assert book.host_fees_uc + sum(h.fees_uc for h in book.holdings.values()) == sum(fees)
    assert book.host_fees_uc >= 0
