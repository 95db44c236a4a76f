"""The ``p2pgrid`` command line (see ``main``)."""
