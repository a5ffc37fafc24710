"""The store: YouTube-8M shards converted into a Zarr + Parquet directory (docs/store.md).

    from ingest.store import open_store, verify_store, read_truth
    from ingest.store.convert import ConvertConfig, convert

`layout` (names, schemas, checksums, manifest) is shared by both sides; `writer` and
`convert` write parts; `reader`, `verify` and `truth` read them; `segments` holds the
window, candidate and mined-negative kernels both sides use.
"""
from ingest.lazy import lazy_exports

_EXPORTS = {
    "open_store": "ingest.store.reader",
    "Store": "ingest.store.reader",
    "RowArray": "ingest.store.reader",
    "StoreError": "ingest.store.layout",
    "read_manifest": "ingest.store.layout",
    "FORMAT_VERSION": "ingest.store.layout",
    "store_info": "ingest.store.verify",
    "verify_store": "ingest.store.verify",
    "read_truth": "ingest.store.truth",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
