"""What an installation earns, from certified ledger entries, and what that makes of an investment.

* ``statement`` — cash flows by stream, statements, annualised figures: NPV, IRR, payback (pure)
* ``report``    — read simnet runs' ledgers, compute, write the HTML + PNG + JSON report

The commands are ``p2pgrid invest …`` (``p2pgrid.cli.invest``). This package's ``__init__``
imports nothing: import the module you need.
"""
