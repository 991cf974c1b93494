"""Published batch-size results shown next to ours (another dataset and scale: compared by relative drop).

Each reference is data with its source. Accuracies are ImageNet linear-probe top-1 in percent after 100
pretraining epochs, as printed in the source; they are never mixed into our means.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """One published curve: top-1 (%) at each batch size, with where it comes from."""

    key: str
    method: str
    dataset: str
    epochs: int
    batch_sizes: tuple[int, ...]
    top1: tuple[float, ...]
    source: str
    note: str = ""

    @property
    def label(self) -> str:
        """Legend/table label that says this is not our setting."""
        return f"{self.method} (ref: {self.dataset}, {self.epochs} ep)"


_SEED000 = ("seed 000, 'Unbiased VICReg' slides (Bezyazichniy et al., MIPT, 2024), "
            "slide 'SimCLR vs VICReg' (top-1, ImageNet, 100 epochs)")
_NOTE_4092 = ("the slide prints batch size 4092, almost certainly 4096; kept as printed "
              "(it changes nothing in a relative-drop comparison)")

REFERENCES: tuple[Reference, ...] = (
    Reference("seed000_simclr", "SimCLR", "ImageNet", 100, (256, 512, 1024, 2048, 4092),
              (57.5, 60.7, 62.8, 64.0, 64.6), _SEED000, _NOTE_4092),
    Reference("seed000_vicreg", "VICReg", "ImageNet", 100, (256, 512, 1024, 2048, 4092),
              (67.9, 68.2, 68.3, 68.6, 67.8), _SEED000, _NOTE_4092),
    Reference("seed003_simsiam", "SimSiam", "ImageNet", 100, (64, 128, 256, 512, 1024, 2048, 4096),
              (66.1, 67.3, 68.1, 68.1, 68.0, 67.9, 64.0),
              "seed 003, SSL lecture slides (Munkhoeva, AIRI), quoting SimSiam (Chen & He, 2021) Table 2 "
              "'Effect of batch sizes' (ImageNet linear evaluation, 100-epoch pretraining)"),
)


def relative_drops(ref: Reference) -> tuple[int, float, list[float]]:
    """(best batch size, best top-1, relative drop from the best in % at each batch size)."""
    best_i = max(range(len(ref.top1)), key=lambda i: (ref.top1[i], -ref.batch_sizes[i]))
    best = ref.top1[best_i]
    return ref.batch_sizes[best_i], best, [100.0 * (best - a) / best for a in ref.top1]
