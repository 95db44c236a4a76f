"""Test tools shipped with the package, shared by tests and simnet (after ethereum/ddht)."""
