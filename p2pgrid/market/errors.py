"""Errors of the market rules (book, pools, router, auction).

    MarketError                      (p2pgrid.errors)
    ├── InvalidOrder                 an order that breaks the book's rules (size, price, expiry)
    │   ├── DuplicateOrder           an order id the book already holds
    │   └── AlreadyExpired           an order already expired when it is added
    ├── UnknownOrder                 cancel / fill of an order the book does not hold
    ├── Overfill                     a fill larger than what remains of the order
    └── PoolError                    AMM pool rules
        ├── PoolFrozen               a swap or deposit at or after the pool's gate closure
        ├── InsufficientLiquidity    a swap the reserves cannot serve, or an empty pool
        ├── CapacityExceeded         energy above what the host can deliver in the slot
        ├── SlippageExceeded         a swap worse than the caller's bound (min out / max in)
        ├── NotPoolHost              an energy deposit by someone other than the host
        └── DepositTooSmall          a deposit that would mint no share

All of them mean the *caller or a peer* broke a rule: reject the request, keep running.
"""

from __future__ import annotations

from p2pgrid.errors import MarketError


class InvalidOrder(MarketError):
    pass


class DuplicateOrder(InvalidOrder):
    pass


class AlreadyExpired(InvalidOrder):
    pass


class UnknownOrder(MarketError):
    pass


class Overfill(MarketError):
    pass


class PoolError(MarketError):
    pass


class PoolFrozen(PoolError):
    pass


class InsufficientLiquidity(PoolError):
    pass


class DepositTooSmall(PoolError):
    pass


class CapacityExceeded(PoolError):
    pass


class SlippageExceeded(PoolError):
    pass


class NotPoolHost(PoolError):
    pass
