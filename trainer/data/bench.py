"""`train loader-bench`: how fast the loader delivers batches on this machine (docs/loader.md).

    result = run_bench(BenchConfig(store="data/store", kind="video", seconds=10))
    result.to_dict()      # samples/s, MB/s, batches/s, memory, ceilings

One run: a warm-up of `warmup_batches` batches (numba kernels loaded, slots touched,
loader threads started once), then the loader from the start of epoch 0 for
`seconds` or until the epoch ends, whichever comes first. Counted per batch: valid
samples (padding repeats excluded), batches, feature bytes delivered (the uint8
tensors `frames`, `windows`, `context` as the consumer receives them, padding
included) and the process's CPU time (all threads). Memory is read from
/proc/self/status every 2 ms during the run (after a batch) and at its end: anonymous resident memory (`RssAnon`: the loader's buffers, Python, torch) and file-backed
resident memory (`RssFile`: the store's pages mapped by the gathers, which the
kernel can drop) separately; `loader_anon_mb` is the peak anonymous memory above
what the process held before the loader was built. Bytes read from the disk come
from /proc/self/io (`read_bytes`).

Ceilings, measured in the same run:
- memcpy: the mean feature bytes of one batch copied into one pre-touched buffer (one
  thread, `np.copyto`), each time from the next such piece of a pre-touched source of
  at least 256 MiB, larger than the CPU caches (the loader's bytes come from memory
  too), median of repeats;
- `cold`: every file of the store is evicted from the page cache with
  posix_fadvise(POSIX_FADV_DONTNEED) before the timed run (after an fdatasync,
  so that no dirty page stays); afterwards the shard files that the batch kind reads
  are evicted again and read sequentially (8 MiB reads) as the disk's ceiling. The
  pages the warm-up touched are unmapped first (the index is rebuilt), because the
  kernel keeps pages that a process maps.
"""
from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ingest.store import open_store
from trainer.data.batches import touched
from trainer.data.index import StoreIndex
from trainer.data.loader import Loader, LoaderConfig, LoaderError

FEATURE_FIELDS = ("frames", "windows", "context")  # the uint8 feature tensors of a batch
READ_CHUNK = 8 << 20  # bytes per read() of the sequential-read ceiling
MEMCPY_SECONDS = 0.3  # at least this long, and at least MEMCPY_REPEATS copies
MEMCPY_REPEATS = 5
MEMCPY_SOURCE_BYTES = 256 << 20  # larger than any CPU cache: the copies read memory
# resident memory read at most this often during the timed run (and at its end): a read
# of /proc/self/status costs ~20-40 us, a tenth of a segment batch's ~0.2 ms
MEMORY_EVERY_S = 0.002
MB = 1e6


@dataclass(frozen=True)
class BenchConfig:
    """One `loader-bench` run (the loader's own options are those of LoaderConfig)."""

    store: str
    kind: str = "video"
    batch_size: int = 128
    max_len: int | None = 150
    threads: int = 2
    device: str = "cpu"
    seconds: float = 10.0
    cold: bool = False
    warmup_batches: int = 2
    seed: int = 0
    capacity: int | None = None  # shard files of each array mapped at once (None: default)

    def loader_config(self) -> LoaderConfig:
        return LoaderConfig(kind=self.kind, batch_size=self.batch_size, max_len=self.max_len,
                            threads=self.threads, device=self.device, seed=self.seed)


@dataclass
class BenchResult:
    """What one run measured (rates per second of the timed part; MB = 10^6 bytes)."""

    store: str
    kind: str
    batch_size: int
    max_len: int | None
    threads: int
    device: str
    cold: bool
    epoch_batches: int  # batches in one epoch of this kind
    batches: int
    samples: int
    feature_bytes: int
    seconds: float
    epoch_done: bool  # the run covered the whole epoch (else it stopped at `seconds`)
    samples_per_s: float
    batches_per_s: float
    feature_mb_per_s: float
    cpu_seconds: float  # CPU time of the whole process (all threads) in the timed part
    feature_mb_per_cpu_s: float
    memcpy_mb_per_s: float
    of_memcpy: float  # feature bytes/s ÷ memcpy bytes/s
    anon_before_mb: float  # RssAnon before the loader was built
    anon_peak_mb: float  # peak RssAnon during the run
    loader_anon_mb: float  # anon_peak_mb - anon_before_mb
    file_peak_mb: float  # peak RssFile during the run (mapped store pages)
    disk_read_mb: float  # bytes fetched from storage during the timed part
    disk_read_mb_per_s: float
    files_mapped_peak: int  # shard files mapped at once, peak (sampled with the memory)
    maps_made: int  # shard-file mappings made during the timed part
    store_files: int | None = None  # cold: files evicted
    read_files_mb: float | None = None  # cold: bytes of the shard files the kind reads
    seq_read_mb_per_s: float | None = None  # cold: sequential read of those files, evicted
    of_seq_read: float | None = None  # cold: disk_read_mb_per_s ÷ seq_read_mb_per_s

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- /proc readings

def _proc(path: str, *keys: str) -> list[int]:
    """The first numbers of the lines `key: number ...` of a /proc file, for `keys`."""
    got = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in keys:
                got[key] = int(rest.split()[0])
    return [got[k] for k in keys]


def memory_mb() -> tuple[float, float]:
    """(RssAnon, RssFile) of this process in MB, from /proc/self/status (kB there)."""
    anon, file_ = _proc("/proc/self/status", "RssAnon", "RssFile")
    return anon * 1024 / MB, file_ * 1024 / MB


def disk_read_bytes() -> int:
    """Bytes this process (all its threads) caused to be fetched from storage."""
    return _proc("/proc/self/io", "read_bytes")[0]


# ---------------------------------------------------------------- page cache

def store_files(path: str | Path) -> list[Path]:
    """Every regular file under a store directory."""
    out = []
    for root, _dirs, names in os.walk(path):
        out.extend(Path(root) / n for n in sorted(names))
    return sorted(out)


def evict(paths: list[Path]) -> None:
    """Drop `paths` from the page cache (written back first; mapped pages stay)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sequential_read(paths: list[Path]) -> tuple[int, float]:
    """Read `paths` in order with large reads; (bytes, seconds)."""
    buf = memoryview(bytearray(READ_CHUNK))
    n, t0 = 0, time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                n += k
    return n, time.perf_counter() - t0


def read_paths(index: StoreIndex, kind: str) -> list[Path]:
    """The shard files a batch kind gathers from."""
    frames, windows = list(index.frames.paths), list(index.windows.paths)
    return {"video": frames, "segment": windows, "aware": windows + frames,
            "candidates": frames}[kind]


def mapped(paths: list[Path]) -> list[str]:
    """Which of `paths` this process still maps (from /proc/self/maps)."""
    names = {str(Path(p).resolve()) for p in paths}
    with open("/proc/self/maps") as f:
        return sorted({line.split(None, 5)[-1].strip() for line in f} & names)


def open_files(root: str | Path, pid: int | str = "self") -> tuple[int, int]:
    """(entries of /proc/PID/maps, open descriptors) on files under the directory `root`."""
    prefix = str(Path(root).resolve()) + os.sep
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(line.rstrip().split(None, 5)[-1].startswith(prefix) for line in f)
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix)
        except OSError:  # closed since the listing (the listing's own descriptor)
            pass
    return maps, fds


# ---------------------------------------------------------------- memcpy ceiling

def memcpy_rate(nbytes: int) -> float:
    """Bytes/s of one thread copying `nbytes` at a time into one pre-touched buffer (as
    the loader refills a slot), each time from the next `nbytes` of a pre-touched source
    of at least MEMCPY_SOURCE_BYTES: batches come from memory, as the loader's do, not
    from a source small enough to stay in the CPU's caches (a 1.6 MB segment batch
    copied again and again ran at 47 GB/s here, three times what memory gives)."""
    nbytes = max(int(nbytes), 1)
    chunks = max(2, -(-MEMCPY_SOURCE_BYTES // nbytes))
    src = np.ones(chunks * nbytes, np.uint8)
    dst = touched(nbytes, np.uint8)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MEMCPY_REPEATS or time.perf_counter() - start < MEMCPY_SECONDS:
        k = len(times) % chunks  # the next piece of the source
        t = time.perf_counter()
        np.copyto(dst, src[k * nbytes:(k + 1) * nbytes])
        times.append(time.perf_counter() - t)
    return nbytes / statistics.median(times)


# ---------------------------------------------------------------- the run

def feature_bytes(batch) -> int:
    """Bytes of a batch's uint8 feature tensors (shapes only: no device sync)."""
    total = 0
    for name in FEATURE_FIELDS:
        t = getattr(batch, name, None)
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


def check_device(device: str) -> None:
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise LoaderError(f"device {device}: CUDA is not available on this machine "
                          f"(torch {torch.__version__})")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(config: BenchConfig,
              on_batch: Callable[[int, int], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> BenchResult:
    """Measure the loader (see the module docstring). `on_start(epoch_batches)` is called
    when the timed part begins, `on_batch(samples, feature_bytes)` after each timed batch
    (a progress display)."""
    check_device(config.device)
    store = open_store(config.store)
    cfg = config.loader_config()
    anon_before, _ = memory_mb()
    index = StoreIndex.build(store, config.capacity)
    loader = Loader(index, cfg)
    _warm_up(loader, config.warmup_batches)
    n_files = None
    if config.cold:
        paths = _all_paths(index)
        del loader, index
        _released(paths)
        anon_before, _ = memory_mb()  # the first loader's memory is gone: measure again
        index = StoreIndex.build(store, config.capacity)  # maps nothing yet, reads no row
        files = store_files(store.path)
        evict(files)
        n_files = len(files)
        loader = Loader(index, cfg)
    loader.set_epoch(0)
    plan = loader.plan(0)
    if on_start is not None:
        on_start(len(plan))

    batches = samples = nbytes = 0
    anon_peak, file_peak = memory_mb()
    anon_peak = max(anon_peak, anon_before)  # the allocator may hand pages back meanwhile
    device = torch.device(cfg.device)
    it, batch = iter(loader), None
    mapped_peak, maps0 = index.mapping_counts()
    read0 = disk_read_bytes()
    cpu0, t0 = time.process_time(), time.perf_counter()
    last_memory = t0
    for batch in it:
        n = int(plan.batch(batches)[1].sum())  # valid rows, from the host-side plan
        b = feature_bytes(batch)
        batches, samples, nbytes = batches + 1, samples + n, nbytes + b
        if time.perf_counter() - last_memory >= MEMORY_EVERY_S:
            anon, file_ = memory_mb()
            anon_peak, file_peak = max(anon_peak, anon), max(file_peak, file_)
            mapped_peak = max(mapped_peak, index.mapping_counts()[0])
            last_memory = time.perf_counter()
        if on_batch is not None:
            on_batch(n, b)
        if time.perf_counter() - t0 >= config.seconds:
            break
    _sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    read = disk_read_bytes() - read0
    it.close()  # stops and joins the loader threads (outside the timed part)
    anon, file_ = memory_mb()
    anon_peak, file_peak = max(anon_peak, anon), max(file_peak, file_)
    mapped, maps1 = index.mapping_counts()
    mapped_peak = max(mapped_peak, mapped)

    memcpy = memcpy_rate(nbytes / max(batches, 1))
    rate = nbytes / wall
    result = BenchResult(
        store=str(store.path), kind=cfg.kind, batch_size=cfg.batch_size, max_len=cfg.max_len,
        threads=cfg.threads, device=cfg.device, cold=config.cold, epoch_batches=len(plan),
        batches=batches, samples=samples, feature_bytes=nbytes, seconds=wall,
        epoch_done=batches == len(plan), samples_per_s=samples / wall,
        batches_per_s=batches / wall, feature_mb_per_s=rate / MB, cpu_seconds=cpu,
        feature_mb_per_cpu_s=nbytes / max(cpu, 1e-9) / MB, memcpy_mb_per_s=memcpy / MB,
        of_memcpy=rate / memcpy, anon_before_mb=anon_before, anon_peak_mb=anon_peak,
        loader_anon_mb=anon_peak - anon_before, file_peak_mb=file_peak,
        files_mapped_peak=mapped_peak, maps_made=maps1 - maps0,
        disk_read_mb=read / MB, disk_read_mb_per_s=read / wall / MB, store_files=n_files)
    if config.cold:
        paths = read_paths(index, cfg.kind)
        every = _all_paths(index)
        del loader, it, index, batch
        _released(every)
        evict(paths)
        got, secs = sequential_read(paths)
        result.read_files_mb = got / MB
        result.seq_read_mb_per_s = got / secs / MB
        result.of_seq_read = result.disk_read_mb_per_s / result.seq_read_mb_per_s
    return result


def _warm_up(loader: Loader, n: int) -> None:
    """Iterate `n` batches (kernels loaded, buffers touched), then stop the threads."""
    if n < 1:
        return
    it = iter(loader)
    for k, _ in enumerate(it, 1):
        if k >= n:
            break
    it.close()


def _all_paths(index: StoreIndex) -> list[Path]:
    return list(index.frames.paths) + list(index.windows.paths)


def _released(paths: list[Path]) -> None:
    """Check, after the caller dropped its index and loader, that no shard file is mapped
    any more: the kernel keeps the pages of mapped files, so eviction needs this."""
    gc.collect()
    if left := mapped(paths):
        raise LoaderError(f"{left[0]}: still mapped by this process after the benchmark's "
                          f"loader was released (another loader of this store?), so its pages "
                          f"cannot be evicted for --cold")
