"""``python -m bsstudy`` (e.g. under ``torchrun --nproc_per_node 2 -m bsstudy train --run-dir DIR``)."""
import sys

from .cli import main

sys.exit(main())
