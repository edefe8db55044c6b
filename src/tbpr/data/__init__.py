"""Datasets: readers into the canonical manifest, checks, statistics, and the torch input pipeline.

This package namespace re-exports the torch-free part; the input pipeline lives in
``tbpr.data.transforms``, ``tbpr.data.tokenizer``, ``tbpr.data.datasets`` and ``tbpr.data.samplers``;
generated captions are read and written through ``tbpr.data.caption_store``.
"""

from tbpr.data.check import CheckReport, check_dataset, load_training_manifest
from tbpr.data.readers import FORMATS, FormatSpec, get_format, read_dataset, register_format
from tbpr.data.schema import SPLITS, CaptionRecord, ImageRecord, Manifest, canonical_split
from tbpr.data.stats import split_stats

__all__ = [
    "FORMATS",
    "SPLITS",
    "CaptionRecord",
    "CheckReport",
    "FormatSpec",
    "ImageRecord",
    "Manifest",
    "canonical_split",
    "check_dataset",
    "get_format",
    "load_training_manifest",
    "read_dataset",
    "register_format",
    "split_stats",
]
