"""``python -m simnet demo|up|study|gossip`` (see ``simnet.demo``; the seasonal study: ``simnet.study``)."""

from __future__ import annotations

import sys

from simnet.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
