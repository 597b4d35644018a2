"""Benchmarks: ``python scripts/bench.py [--quick] [--output bench.json] [--scenarios image_full_ft ...]``.

Same as ``hf-transfer bench``; needs the real data and models in ``../shared`` (or ``--shared DIR``).
"""

import sys

from hf_transfer.cli import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
