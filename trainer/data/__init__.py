"""The streaming loader: store → batches on the device (docs/loader.md).

    from trainer.data import Loader, LoaderConfig
"""
from trainer.data.batches import AwareBatch, CandidateBatch, SegmentBatch, VideoBatch
from trainer.data.index import StoreIndex
from trainer.data.loader import Loader, LoaderConfig, LoaderError, context_span, eval_config

__all__ = ["AwareBatch", "CandidateBatch", "Loader", "LoaderConfig", "LoaderError", "SegmentBatch",
           "StoreIndex", "VideoBatch", "context_span", "eval_config"]
