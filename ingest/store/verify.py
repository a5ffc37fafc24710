"""`ingest info` and `ingest verify`: a store's counts, and a full re-read against its manifest."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ingest.codec.video import FRAME_BYTES
from ingest.store.layout import (
    PART_JSON,
    PARTS,
    TABLES,
    StoreError,
    crc32c,
    file_checksum,
    read_manifest,
    read_part_json,
)
from ingest.store.segments import (
    NEGATIVE_BYTES,
    WINDOW_FRAMES,
    candidate_count,
    gather_windows,
    negatives_numpy,
    outside_video,
    window_spans,
)


def store_info(path) -> dict:
    """Counts of a complete store (from its manifest) and its size on disk."""
    m = read_manifest(path)
    t = m["totals"]
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return {
        "format_version": m["format_version"], "parts": t["parts"], "videos": t["videos"],
        "frames": t["frames"], "rated_segments": t["rated_segments"],
        "positives": t["positives"], "outside_video": t["outside_video"],
        "candidate_segments": t["candidates"], "video_level_records": t["video_level"],
        "folds": m["folds"], "skipped_shards": len(m["skipped_shards"]),
        "skipped_records": t["skipped_records"], "source_bytes": t["source_bytes"],
        "store_bytes": size,
    }


def verify_store(path, progress: bool = False, sources: bool = False,
                 source_dir=None) -> list[str]:
    """Re-read every part and compare it with the manifest: every file's CRC-32, the
    tables' row counts (pyarrow), the arrays' shapes and contents (read through zarr,
    windows recomputed from frames); with `sources`, also re-read each part's source shard
    (`source_of`) and compare its size and CRC-32C with those recorded. Returns the
    problems found (empty = ok)."""
    from tqdm import tqdm

    path = Path(path)
    m = read_manifest(path)
    problems = []
    listed = {p["part"] for p in m["parts"]}
    on_disk = {p.name for p in (path / PARTS).iterdir()} if (path / PARTS).is_dir() else set()
    problems += [f"{p}: part on disk but not in the manifest" for p in sorted(on_disk - listed)]
    for entry in tqdm(m["parts"], desc="verify", disable=not progress, file=sys.stderr):
        try:
            problems += [f"{entry['part']}: {p}" for p in _verify_part(path, entry)]
            if sources:
                problems += [f"{entry['part']}: {p}" for p in _verify_source(path, entry,
                                                                             source_dir)]
        except Exception as err:  # noqa: BLE001 - any unreadable file is a finding
            problems.append(f"{entry['part']}: unreadable ({type(err).__name__}: {err})")
    totals = {k: sum(p["counts"][k] for p in m["parts"]) for k in m["parts"][0]["counts"]} \
        if m["parts"] else {}
    for key, value in totals.items():
        if m["totals"].get(key) != value:
            problems.append(f"manifest totals: {key} = {m['totals'].get(key)}, parts sum {value}")
    return problems


def source_of(store: Path, entry: dict, source_dir=None) -> Path:
    """Where a part's source shard is looked for: `source_dir / <source base name>` if a
    directory is given, else part.json's `source_path` taken relative to the store."""
    if source_dir is not None:
        return Path(source_dir) / entry["source"]
    return Path(os.path.normpath(Path(store) / entry["source_path"]))


def _verify_source(store: Path, entry: dict, source_dir) -> list[str]:
    """The part's source, re-read: its size and CRC-32C against part.json's."""
    src = source_of(store, entry, source_dir)
    if not src.is_file():
        return [f"source {src}: not found"]
    size, crc = file_checksum(src, crc=crc32c)
    if size != entry["source_bytes"]:
        return [f"source {src}: {size} bytes, converted from {entry['source_bytes']}"]
    if crc != entry["source_crc32c"]:
        return [f"source {src}: CRC-32C {crc}, converted from {entry['source_crc32c']}"]
    return []


def mined_negatives(videos, segments) -> np.ndarray:
    """The part's mined negatives recomputed from its tables (paper §3.6: classes outside
    the video's labels and its positively rated segment labels): (V, 125) uint8, packed,
    with the numpy twin `segments.negatives_numpy` (the writer used the kernel)."""
    labels = videos["labels"].combine_chunks()  # list<int32>: offsets and values
    label_offsets = np.asarray(labels.offsets, np.int64)
    label_offsets -= label_offsets[0]
    flat = np.asarray(labels.flatten(), np.int64)
    rated = np.bincount(np.asarray(segments["video_index"], np.int64),
                        minlength=videos.num_rows)  # segments are in video order
    seg_offsets = np.concatenate([[0], np.cumsum(rated)]).astype(np.int64)
    return negatives_numpy(label_offsets, flat, seg_offsets,
                           np.asarray(segments["label"], np.int64),
                           np.asarray(segments["score"], np.float32),
                           np.asarray(videos["has_labels"], bool))


def _verify_part(store: Path, entry: dict) -> list[str]:
    import pyarrow.parquet as pq
    import zarr

    d = store / PARTS / entry["part"]
    out = []
    try:
        if read_part_json(d) != entry:
            out.append("part.json differs from the manifest entry")
    except StoreError as err:
        out.append(str(err))
    files = {f.relative_to(d).as_posix() for f in d.rglob("*") if f.is_file()} - {PART_JSON}
    listed = set(entry["files"])
    out += [f"{f}: missing" for f in sorted(listed - files)]
    out += [f"{f}: not listed in the manifest" for f in sorted(files - listed)]
    for f in sorted(files & listed):
        if file_checksum(d / f)[1] != entry["files"][f]:
            out.append(f"{f}: CRC-32 differs from the manifest")
    if out:  # the files are not those converted: the checks below would only repeat that
        return out
    c = entry["counts"]
    t = {name: pq.read_table(d / f"{name}.parquet") for name in TABLES}
    for name, key in (("videos", "videos"), ("segments", "rated_segments"),
                      ("candidates", "candidates"), ("video_level", "video_level")):
        if t[name].num_rows != c[key]:
            out.append(f"{name}.parquet has {t[name].num_rows} rows, manifest {c[key]}")
    v, s = t["videos"], t["segments"]
    nf = np.asarray(v["n_frames"], np.int64)
    fo = np.asarray(v["frame_offset"], np.int64)
    if not np.array_equal(fo, np.concatenate([[0], np.cumsum(nf)[:-1]]).astype(np.int64)[:len(fo)]):
        out.append("videos.frame_offset is not the running sum of n_frames")
    if int(nf.sum()) != c["frames"]:
        out.append(f"videos hold {int(nf.sum())} frames, manifest {c['frames']}")
    if candidate_count(nf) != c["candidates"]:
        out.append("candidate count does not match the videos' lengths")
    neg = np.load(d / "negatives.npy")
    if neg.shape != (c["videos"], NEGATIVE_BYTES):
        out.append(f"negatives.npy has shape {neg.shape}")
    elif not np.array_equal(neg, mined_negatives(v, s)):
        out.append("negatives.npy differs from the negatives mined from the tables (§3.6)")
    frames = zarr.open_array(str(d / "frames.zarr"), mode="r")
    windows = zarr.open_array(str(d / "windows.zarr"), mode="r")
    if frames.shape != (c["frames"], FRAME_BYTES):
        out.append(f"frames.zarr has shape {frames.shape}")
    if windows.shape != (c["rated_segments"], WINDOW_FRAMES, FRAME_BYTES):
        out.append(f"windows.zarr has shape {windows.shape}")
    if out:
        return out
    video = np.asarray(s["video_index"], np.int64)
    starts = np.asarray(s["start_time"], np.int64)
    if int(np.sum(np.asarray(s["score"]) > 0)) != c["positives"]:
        out.append("positives differ from the manifest")
    if int(outside_video(starts, nf[video]).sum()) != c["outside_video"]:
        out.append("outside_video count differs from the manifest")
    lo, hi, pl_, _ = window_spans(starts, nf[video])
    empty = np.nonzero(hi <= lo)[0]  # windows with no frame at all: every byte padding
    if len(empty) and windows.get_orthogonal_selection((empty, slice(None), slice(None))).any():
        out.append("windows.zarr has non-zero bytes in a window outside its video")
    step = frames.shards[0] if frames.shards else frames.chunks[0]
    for a in range(0, c["frames"], step):  # bounded memory: one Zarr shard at a time
        end = min(a + step, c["frames"])
        rows = np.nonzero((fo[video] + hi > a) & (fo[video] + lo < end))[0]
        if len(rows) == 0:
            continue
        # windows touching this block: recompute them from the frames they need
        first = int((fo[video[rows]] + lo[rows]).min())
        last = int((fo[video[rows]] + hi[rows]).max())
        src = frames[first:last]
        want = gather_windows(src, fo[video[rows]] - first, lo[rows], hi[rows], pl_[rows])
        got = windows.get_orthogonal_selection((rows, slice(None), slice(None)))
        if not np.array_equal(want, got):
            out.append(f"windows.zarr differs from the frames near frame {a}")
            break
    return out
