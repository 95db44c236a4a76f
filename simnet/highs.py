"""The solver of ``simnet.optimum``'s linear programs: scipy's HiGHS (``linprog(method="highs")``).

Kept apart from the model because importing scipy pulls in ``socket``, ``subprocess`` and
``threading``, which the pure modules may not (tests/test_architecture.py); nothing here reads a
file or a clock.
"""

from __future__ import annotations

from simnet.optimum import LinearProgram, OptimumError


def solve(lp: LinearProgram) -> list[float]:
    """The optimal x of ``lp``; ``OptimumError`` when HiGHS finds none (infeasible, unbounded)."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_array

    def matrix(triplets: list[tuple[int, int, float]], rows: int) -> coo_array | None:
        if not rows:
            return None
        r, c, v = zip(*triplets) if triplets else ((), (), ())
        return coo_array((v, (r, c)), shape=(rows, lp.n_vars)).tocsr()

    result = linprog(lp.c, A_ub=matrix(lp.ub, len(lp.b_ub)), b_ub=lp.b_ub or None,
                     A_eq=matrix(lp.eq, len(lp.b_eq)), b_eq=lp.b_eq or None, bounds=lp.bounds, method="highs")
    if result.status != 0 or result.x is None:
        raise OptimumError(f"HiGHS found no optimum: {result.message}")
    return [float(v) for v in result.x]
