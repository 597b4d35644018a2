"""Main entry: ``accelerate launch scripts/finetune.py recipes/NAME.yaml [--set field=value ...]``.

Runs the same under ``python``, ``torchrun`` and ``accelerate launch``; see the README.
"""

import sys

from hf_transfer.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    debug = [a for a in argv if a == "--debug"]
    main([*debug, "finetune", *[a for a in argv if a != "--debug"]])
