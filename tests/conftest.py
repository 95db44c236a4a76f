"""Shared pytest hooks: trio nests exception groups deeper than a report shows, so list the leaves."""

import pytest


def _leaves(exc):
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and isinstance(call.excinfo.value, BaseExceptionGroup):
        leaves = list(_leaves(call.excinfo.value))
        report.sections.append(("innermost errors", "\n".join(f"{type(e).__name__}: {e}" for e in leaves)))
