"""p2pgrid: peer-to-peer energy trading for households and solar+storage stations."""

__version__ = "0.1.0"
