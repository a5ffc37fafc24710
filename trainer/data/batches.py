"""The four batch kinds: their fields with declared shapes and dtypes, host buffers, transfer.

Every field is declared before any data moves (`SPECS`): a shape over the symbols
`B` (batch rows), `L` (padded frames), `V` (context videos of a candidate batch) and
fixed sizes, and a dtype. `HostSlot` allocates each field once at its largest shape, as
one flat buffer (pinned when the batches go to a CUDA device); a batch uses a
C-contiguous view at the front of it, so a shorter padded length is still one
contiguous copy. Packed fields (`labels`, `negatives`: 125 bytes = 1000 bits per row,
little-endian bit order as the store's `negatives.npy`) travel packed and are
unpacked into `(B, 1000)` bool on the device; a CPU loader's threads unpack them into a
second buffer of the slot (`unpacked_view`), so CPU batches are views, allocated once.

Frames stay uint8 all the way: the models dequantise on the device, in their own
dtype, as their first operation (`trainer.layers.masking.dequantize`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ingest.codec.video import FRAME_BYTES
from ingest.store.segments import NEGATIVE_BYTES, WINDOW_FRAMES
from ingest.vocab import N_SEGMENT_CLASSES

KINDS = ("video", "segment", "aware", "candidates")
PACKED = ("labels", "negatives")  # bit-packed on the host, unpacked on the device

_ROWS = {"valid": (("B",), np.bool_), "rows": (("B",), np.int64)}
_SEGMENT = {
    "windows": (("B", WINDOW_FRAMES, FRAME_BYTES), np.uint8),
    "class_index": (("B",), np.int64),
    "score": (("B",), np.float32),
    "negatives": (("B", NEGATIVE_BYTES), np.uint8),
}
_CONTEXT = {"context": (("B", "L", FRAME_BYTES), np.uint8), "context_mask": (("B", "L"), np.bool_)}
SPECS: dict[str, dict[str, tuple[tuple, type]]] = {
    "video": {"frames": (("B", "L", FRAME_BYTES), np.uint8), "mask": (("B", "L"), np.bool_),
              "labels": (("B", NEGATIVE_BYTES), np.uint8), **_ROWS},
    "segment": {**_SEGMENT, **_ROWS},
    "aware": {**_SEGMENT, **_CONTEXT, **_ROWS},
    "candidates": {"windows": (("B", WINDOW_FRAMES, FRAME_BYTES), np.uint8),
                   "video_slot": (("B",), np.int64), **_ROWS,
                   "context": (("V", "L", FRAME_BYTES), np.uint8),
                   "context_mask": (("V", "L"), np.bool_), "context_rows": (("V",), np.int64)},
}


def _shape(spec: tuple, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(dims[d] if isinstance(d, str) else d for d in spec)


def touched(n: int, dtype) -> np.ndarray:
    """A zeroed buffer whose pages are all touched now: `np.zeros` maps untouched zero
    pages, which the first batches would fault in one by one (~0.4 GB/s here)."""
    buf = np.empty(n, dtype)
    buf.fill(0)
    return buf


class HostSlot:
    """One set of host buffers for a batch kind, allocated once at `capacity` dims."""

    def __init__(self, kind: str, capacity: dict[str, int], pin: bool, skip: tuple[str, ...] = ()):
        self.kind = kind
        self.buffers: dict[str, np.ndarray] = {}
        for name, (spec, dtype) in SPECS[kind].items():
            if name in skip:  # a field this loader never fills (candidates without contexts)
                continue
            n = int(np.prod(_shape(spec, capacity)))
            if pin:  # page-locked, so the device copy can run asynchronously
                t = torch.empty(n * np.dtype(dtype).itemsize, dtype=torch.uint8, pin_memory=True)
                self.buffers[name] = t.numpy().view(dtype)
            else:
                self.buffers[name] = touched(n, dtype)
        # CPU batches: the packed fields unpacked by the loader thread into these, so the
        # consumer gets views and nothing is allocated per batch (first touches are slow)
        self.unpacked: dict[str, np.ndarray] = {
            name: touched(capacity["B"] * N_SEGMENT_CLASSES, np.bool_)
            for name in PACKED if name in self.buffers and not pin}

    def view(self, name: str, dims: dict[str, int]) -> np.ndarray:
        """The C-contiguous `name` array of shape `SPECS[kind][name]` at `dims`."""
        spec = SPECS[self.kind][name][0]
        shape = _shape(spec, dims)
        return self.buffers[name][: int(np.prod(shape))].reshape(shape)

    def unpacked_view(self, name: str, dims: dict[str, int]) -> np.ndarray:
        """`(B, 1000)` bool: the packed field `name` unpacked (CPU slots only)."""
        return self.unpacked[name][: dims["B"] * N_SEGMENT_CLASSES].reshape(dims["B"], -1)

    def views(self, dims: dict[str, int]) -> dict[str, np.ndarray]:
        return {name: self.view(name, dims) for name in SPECS[self.kind]}


def unpack_bits(packed: torch.Tensor) -> torch.Tensor:
    """`(B, 125)` uint8, bit c of byte c >> 3 at position c & 7 → `(B, 1000)` bool."""
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    bits = (packed[:, :, None] >> shifts) & 1
    return bits.reshape(packed.shape[0], -1)[:, :N_SEGMENT_CLASSES].bool()


@dataclass
class VideoBatch:
    """Pre-training (paper §3.1): `frames (B, L, 1152)` uint8, `mask (B, L)` bool (True on
    real frames), `labels (B, 1000)` bool multi-hot over the segment classes, `valid (B,)`
    bool (False on padding repeats), `rows (B,)` int64 store-wide video rows."""

    frames: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    rows: torch.Tensor


@dataclass
class SegmentBatch:
    """Context-agnostic fine-tuning (§3.7-3.8): `windows (B, 11, 1152)` uint8 expanded
    segments, `class_index (B,)` int64 rated class, `score (B,)` float32 0/1,
    `negatives (B, 1000)` bool mined negatives of the segment's video, `valid`, `rows`
    (segment rows of the store)."""

    windows: torch.Tensor
    class_index: torch.Tensor
    score: torch.Tensor
    negatives: torch.Tensor
    valid: torch.Tensor
    rows: torch.Tensor


@dataclass
class AwareBatch(SegmentBatch):
    """Context-aware fine-tuning (§3.9): a `SegmentBatch` plus its video with the first 6
    and last 2 segments removed, sampled to Lm: `context (B, L, 1152)` uint8,
    `context_mask (B, L)` bool."""

    context: torch.Tensor = None
    context_mask: torch.Tensor = None


@dataclass
class CandidateBatch:
    """Prediction: whole videos' candidate segments in store order. `windows (B, 11, 1152)`
    uint8, `rows (B,)` int64 candidate rows, `valid (B,)`, `video_slot (B,)` int64: the row of
    `context` for each candidate; `context (V, L, 1152)` uint8 / `context_mask (V, L)` /
    `context_rows (V,)` the distinct videos of the batch (only when contexts are asked for,
    else None), so an aware model encodes each video once."""

    windows: torch.Tensor
    video_slot: torch.Tensor
    valid: torch.Tensor
    rows: torch.Tensor
    context: torch.Tensor | None = None
    context_mask: torch.Tensor | None = None
    context_rows: torch.Tensor | None = None


BATCH_TYPES = {"video": VideoBatch, "segment": SegmentBatch, "aware": AwareBatch,
               "candidates": CandidateBatch}
