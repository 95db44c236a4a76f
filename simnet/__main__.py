"""``python -m simnet demo`` / ``python -m simnet up --nodes N --duration S`` (see ``simnet.demo``)."""

from __future__ import annotations

import sys

from simnet.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
