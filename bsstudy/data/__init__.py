"""Datasets as in-memory uint8 tensors and batched on-device two-view augmentation."""
from bsstudy.data.datasets import ImageTensors, load_dataset, stratified_subset

__all__ = ["ImageTensors", "load_dataset", "stratified_subset"]
