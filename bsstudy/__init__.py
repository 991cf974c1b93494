"""bsstudy: how self-supervised learning depends on batch size.

Plan a grid of SimCLR / VICReg / unbiased-VICReg runs, run them on SLURM (or locally), measure gradient
bias against batch size, and report. See README.md and docs/architecture.md.
"""

__version__ = "0.1.0"
