"""The codec: TFRecord framing and YouTube-8M protobuf records, decoded and encoded (docs/codec.md).

    from ingest.codec import decode_shard, ShardDecoder, write_tfrecord, encode_video

`tfrecord` frames records (both CRC-32Cs), `wire` and `decode` walk the protobuf wire
format in numba into columnar buffers (`video.DecodedShard`), `encode` writes records,
`crc_combine` folds a whole file's CRC-32C from its records' CRCs.
"""
from ingest.lazy import lazy_exports

_EXPORTS = {
    "decode_shard": "ingest.codec.decode",
    "ShardDecoder": "ingest.codec.decode",
    "write_tfrecord": "ingest.codec.tfrecord",
    "iter_records": "ingest.codec.tfrecord",
    "encode_video": "ingest.codec.encode",
    "encode_sequence_example": "ingest.codec.encode",
    "Video": "ingest.codec.video",
    "DecodedShard": "ingest.codec.video",
    "FRAME_BYTES": "ingest.codec.video",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
