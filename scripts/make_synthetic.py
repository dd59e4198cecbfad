#!/usr/bin/env python
"""Generate the procedural synthetic face dataset: the `unsup3d-make-synthetic` command from a checkout.

    python scripts/make_synthetic.py --output data/synthetic --num-train 10000 --num-val 500 --num-test 1000

See `python scripts/make_synthetic.py --help` and :mod:`unsup3d.data.synthetic.cli`.
"""

from __future__ import annotations

import sys

from unsup3d.data.synthetic.cli import main

if __name__ == "__main__":
    sys.exit(main())
