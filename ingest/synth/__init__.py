"""Synthetic YouTube-8M shards with a planted, learnable signal (docs/synth.md).

    from ingest.synth import SynthConfig, write_synth

`world` is what the classes look like (topics, events, ambiguous pairs) and how frames
are rendered; `shards` draws videos and ratings from it and writes the shards.
"""
from ingest.lazy import lazy_exports

_EXPORTS = {
    "SynthConfig": "ingest.synth.shards",
    "write_synth": "ingest.synth.shards",
    "synth_shard": "ingest.synth.shards",
    "iter_shard": "ingest.synth.shards",
    "shard_truth": "ingest.synth.shards",
    "make_world": "ingest.synth.world",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
