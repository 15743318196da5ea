"""Datasets of the shared data pack, brought into the canonical crop with their labels."""
from .sources import DATASETS, Source, default_data_root, load_source

__all__ = ["DATASETS", "Source", "default_data_root", "load_source"]
