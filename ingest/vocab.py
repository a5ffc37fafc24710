"""The YouTube-8M vocabularies: 3862 video classes, of which 1000 are rated segment classes.

`segment_vocabulary.csv` (shipped in `ingest/data/`) lists the 1000 segment
classes; its row order maps a class to 0..999, the order used by the 7th-place
solution and by every prediction matrix of this project.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

import numpy as np

N_VOCAB = 3862  # classes of the YouTube-8M vocabulary (2018 release)
N_SEGMENT_CLASSES = 1000  # classes rated in the segment dataset (3rd challenge)


@lru_cache(maxsize=1)
def segment_vocabulary() -> list[dict]:
    """Rows of segment_vocabulary.csv: Index, KnowledgeGraphId, Name, counts."""
    with resources.files("ingest").joinpath("data/segment_vocabulary.csv").open() as f:
        return list(csv.DictReader(f))


@lru_cache(maxsize=1)
def segment_class_ids() -> np.ndarray:
    """(1000,) int32: the 3862-vocabulary id of segment class 0..999."""
    ids = np.array([int(r["Index"]) for r in segment_vocabulary()], np.int32)
    ids.setflags(write=False)
    return ids


@lru_cache(maxsize=1)
def class_index_of_label() -> np.ndarray:
    """(3862,) int16: segment class index 0..999 of a vocabulary id, -1 if not a segment class."""
    table = np.full(N_VOCAB, -1, np.int16)
    table[segment_class_ids()] = np.arange(N_SEGMENT_CLASSES, dtype=np.int16)
    table.setflags(write=False)
    return table


def to_class_index(labels: np.ndarray) -> np.ndarray:
    """Map vocabulary ids (any int array) to segment class indices; -1 where not rated/out of range."""
    labels = np.asarray(labels, np.int64)
    out = np.full(labels.shape, -1, np.int16)
    ok = (labels >= 0) & (labels < N_VOCAB)
    out[ok] = class_index_of_label()[labels[ok]]
    return out
