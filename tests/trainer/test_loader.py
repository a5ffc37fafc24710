"""The streaming loader on real stores: contents against the reader API, epochs, ranks,
threads, determinism, resume, bad input (issue #13's checks)."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from ingest.store.segments import SEGMENT_FRAMES, unpack_negatives
from trainer.data import Loader, LoaderConfig, LoaderError, StoreIndex, context_span


@pytest.fixture(scope="module")
def vindex(validate_store):
    return StoreIndex.build(validate_store)


def _frame_positions(store, video_row: int) -> dict[bytes, int]:
    """Frame bytes → frame index of one video (synthetic frames are distinct noise)."""
    frames = store.frames(video_row)
    return {f.tobytes(): t for t, f in enumerate(frames)}


def _check_frames(store, video_row, got, mask, lo, hi, max_len, even):
    """`got (L, 1152)` with `mask (L,)`: frames of [lo, hi) of the video, min(Lm, n) of them,
    distinct, in temporal order, zero after."""
    pos = _frame_positions(store, video_row)
    real = got[mask]
    assert len(real) == min(max_len, hi - lo)
    idx = [pos[f.tobytes()] for f in real]
    assert all(lo <= t < hi for t in idx)
    assert idx == sorted(set(idx))  # without replacement, temporal order
    if even:
        k = len(idx)
        assert idx == [lo + ((2 * i + 1) * (hi - lo)) // (2 * k) for i in range(k)]
    assert not got[~mask].any()


def _epoch(loader):
    return [{k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in vars(b).items()}
            for b in loader]


def test_video_batches_match_the_reader(validate_store, vindex):
    cfg = LoaderConfig(kind="video", batch_size=8, max_len=40, threads=2, seed=1)
    loader = Loader(vindex, cfg)
    videos = validate_store.videos
    for b in _epoch(loader):
        assert b["frames"].dtype == torch.uint8 and b["frames"].shape[0] == 8
        assert b["frames"].shape[1] == int(b["mask"].sum(1).max())  # padded to the longest
        for i in range(8):
            row = int(b["rows"][i])
            n = int(videos["n_frames"][row])
            _check_frames(validate_store, row, b["frames"][i].numpy(), b["mask"][i].numpy(),
                          0, n, 40, even=False)
            classes = set(videos["class_indices"][row].to_list())
            assert set(torch.nonzero(b["labels"][i])[:, 0].tolist()) == classes
            assert classes  # unlabelled videos are skipped by default


def test_whole_videos_and_padding_to_max_len(validate_store, vindex):
    whole = next(iter(Loader(vindex, LoaderConfig(kind="video", batch_size=4, max_len=None,
                                                  train=False))))
    n = validate_store.videos["n_frames"].to_numpy()[whole.rows.numpy()]
    np.testing.assert_array_equal(whole.mask.sum(1).numpy(), n)  # all frames of each video
    padded = next(iter(Loader(vindex, LoaderConfig(kind="video", batch_size=4, max_len=30,
                                                   pad_to_max_len=True))))
    assert padded.frames.shape[1] == 30


def test_evaluation_batches_are_deterministic_and_evenly_spaced(validate_store, vindex):
    cfg = LoaderConfig(kind="video", batch_size=8, max_len=25, train=False, seed=0)
    a, b = _epoch(Loader(vindex, cfg)), _epoch(Loader(vindex, LoaderConfig(**{
        **vars(cfg), "seed": 5, "threads": 1})))
    for x, y in zip(a, b):  # evaluation ignores the seed: store order, fixed frames
        for k in x:
            assert torch.equal(x[k], y[k])
    rows = torch.cat([x["rows"][x["valid"]] for x in a]).tolist()
    assert rows == sorted(rows)
    first = a[0]
    for i in range(3):
        row = int(first["rows"][i])
        n = int(validate_store.videos["n_frames"][row])
        _check_frames(validate_store, row, first["frames"][i].numpy(), first["mask"][i].numpy(),
                      0, n, 25, even=True)


def test_segment_batches_match_the_reader(validate_store, vindex):
    seg = validate_store.segments
    negatives = validate_store.negatives()
    loader = Loader(vindex, LoaderConfig(kind="segment", batch_size=16, seed=2))
    seen = []
    for b in _epoch(loader):
        rows = b["rows"].numpy()
        np.testing.assert_array_equal(b["windows"].numpy(), validate_store.windows(rows))
        np.testing.assert_array_equal(b["class_index"].numpy(), seg["class_index"].to_numpy()[rows])
        np.testing.assert_array_equal(b["score"].numpy(), seg["score"].to_numpy()[rows])
        video = seg["video_row"].to_numpy()[rows]
        np.testing.assert_array_equal(b["negatives"].numpy(), negatives[video])
        seen += rows[b["valid"].numpy()].tolist()
    usable = ~seg["outside_video"].to_numpy() & (seg["class_index"].to_numpy() >= 0)
    assert sorted(seen) == np.nonzero(usable)[0].tolist()  # every usable segment once
    assert (~usable).sum() > 0 or seg["outside_video"].sum() == 0


def test_aware_contexts_drop_the_first_6_and_last_2_segments(validate_store, vindex):
    seg = validate_store.segments
    for train in (True, False):
        loader = Loader(vindex, LoaderConfig(kind="aware", batch_size=8, max_len=30, train=train))
        b = next(iter(loader))
        rows = b.rows.numpy()
        np.testing.assert_array_equal(b.windows.numpy(), validate_store.windows(rows))
        for i in range(8):
            video = int(seg["video_row"][int(rows[i])])
            n = int(validate_store.videos["n_frames"][video])
            lo, hi = context_span(np.array([n]))
            assert lo[0] == 6 * SEGMENT_FRAMES and hi[0] <= (-(-n // 5) - 2) * SEGMENT_FRAMES
            _check_frames(validate_store, video, b.context[i].numpy(), b.context_mask[i].numpy(),
                          int(lo[0]), int(hi[0]), 30, even=not train)


def test_every_sample_once_across_3_ranks_and_2_threads(vindex):
    for kind in ("video", "segment"):
        seen = collections.Counter()
        lengths = set()
        for rank in range(3):
            cfg = LoaderConfig(kind=kind, batch_size=5, max_len=10, threads=2, world_size=3,
                               rank=rank, seed=4)
            batches = _epoch(Loader(vindex, cfg))
            lengths.add(len(batches))
            for b in batches:
                seen.update(b["rows"][b["valid"]].tolist())
        loader = Loader(vindex, LoaderConfig(kind=kind, batch_size=5))
        assert seen == collections.Counter(loader.samples.tolist())  # once each
        assert len(lengths) == 1


def test_same_seed_same_batches_other_seed_other_batches_any_thread_count(vindex):
    base = LoaderConfig(kind="video", batch_size=6, max_len=20, seed=9, threads=1)
    a = _epoch(Loader(vindex, base))
    b = _epoch(Loader(vindex, LoaderConfig(**{**vars(base), "threads": 3})))
    c = _epoch(Loader(vindex, LoaderConfig(**{**vars(base), "seed": 10})))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert not all(torch.equal(x["rows"], y["rows"]) for x, y in zip(a, c))


def test_epochs_differ_and_resume_mid_epoch_gives_the_same_batches(vindex):
    cfg = LoaderConfig(kind="aware", batch_size=4, max_len=12, seed=3)
    full = Loader(vindex, cfg)
    epoch0, epoch1 = _epoch(full), _epoch(full)
    assert not torch.equal(epoch0[0]["rows"], epoch1[0]["rows"])

    part = Loader(vindex, cfg)
    it = iter(part)
    for _ in range(3):
        next(it)
    state = part.state_dict()
    it.close()  # interrupted here
    resumed = Loader(vindex, cfg)
    resumed.load_state_dict(state)
    rest = _epoch(resumed) + _epoch(resumed)
    for x, y in zip(epoch0[3:] + epoch1, rest):
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_candidate_batches_hold_whole_videos_in_store_order(testset_store):
    index = StoreIndex.build(testset_store)
    cand = testset_store.candidates
    loader = Loader(index, LoaderConfig(kind="candidates", batch_size=60, max_len=20,
                                        with_context=True))
    rows, contexts = [], 0
    for b in loader:
        r = b.rows.numpy()
        rows += r.tolist()
        np.testing.assert_array_equal(b.windows.numpy(), testset_store.candidate_windows(r))
        video = cand["video_row"].to_numpy()[r]
        np.testing.assert_array_equal(b.context_rows.numpy()[b.video_slot.numpy()], video)
        contexts += len(b.context_rows)
        for j, v in enumerate(b.context_rows.tolist()):
            n = int(testset_store.videos["n_frames"][v])
            lo, hi = context_span(np.array([n]))
            _check_frames(testset_store, v, b.context[j].numpy(), b.context_mask[j].numpy(),
                          int(lo[0]), int(hi[0]), 20, even=True)
    assert rows == list(range(len(cand)))
    assert contexts == cand["video_row"].n_unique()  # each video's context once


def test_candidate_ranks_take_contiguous_runs_of_the_same_batches(testset_store):
    """Two ranks compute exactly the batches one process computes, split in two runs."""
    index = StoreIndex.build(testset_store)
    one = [b.rows.tolist() for b in Loader(index, LoaderConfig(kind="candidates", batch_size=32))]
    ranks = [[b.rows.tolist() for b in Loader(index, LoaderConfig(
        kind="candidates", batch_size=32, world_size=2, rank=r))] for r in range(2)]
    assert ranks[0] + ranks[1] == one
    assert ranks[0] and ranks[1]
    assert [r for batch in one for r in batch] == list(range(len(testset_store.candidates)))


def test_negatives_unpack_like_the_store(vindex, validate_store):
    b = next(iter(Loader(vindex, LoaderConfig(kind="segment", batch_size=8))))
    video = validate_store.segments["video_row"].to_numpy()[b.rows.numpy()]
    want = unpack_negatives(validate_store.negatives(packed=True)[video])
    np.testing.assert_array_equal(b.negatives.numpy(), want)


@pytest.mark.parametrize("cfg,message", [
    ({"kind": "segment"}, "no rated segments"),
    ({"kind": "video", "folds": (99,)}, "no video in folds [99]"),
    ({"kind": "video", "max_len": 0}, "at least 1"),
    ({"kind": "frames"}, "unknown batch kind"),
    ({"kind": "video", "batch_size": 1000, "drop_last": True}, "fewer than one global batch"),
])
def test_clear_errors(train_store, cfg, message):
    with pytest.raises(LoaderError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loader = Loader(train_store, LoaderConfig(**cfg))
        len(loader)


@pytest.mark.gpu
def test_cuda_batches_equal_cpu_batches(vindex):
    for kind in ("video", "segment", "aware"):
        cfg = LoaderConfig(kind=kind, batch_size=8, max_len=20, seed=1, batches_ahead=2)
        cpu = _epoch(Loader(vindex, cfg))
        gpu = [{k: v.cpu() for k, v in vars(b).items()}
               for b in Loader(vindex, LoaderConfig(**{**vars(cfg), "device": "cuda"}))]
        assert all(torch.equal(x[k], y[k]) for x, y in zip(cpu, gpu) for k in x)
