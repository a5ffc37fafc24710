"""Benchmarks' `--targets`: the project's numba kernels compiled for another instruction set.

A target is `host` (numba compiles for this CPU, its default) or `avx2` (an AVX2 CPU
without AVX-512: `NUMBA_CPU_NAME=haswell` with `NUMBA_CPU_FEATURES` set and empty),
either with an optional `:PATH` that forces the top-k's compress path
(`YT8M_COMPRESS`, predict/simd.py), e.g. `host:permute`.

Why both variables: numba takes the CPU features from the host unless
NUMBA_CPU_FEATURES is set, so `NUMBA_CPU_NAME=haswell` alone on an AVX-512 host still
emits AVX-512 code (vpcompressd and all; checked on the assembly, and by
tests/predict/test_compress_path.py). An empty feature string leaves the features to
the CPU name. numba keys its on-disk cache on the CPU name and features, so a cached
host kernel is never loaded for `avx2`; the `avx2` runs still get a cache directory of
their own (bench_data/numba-haswell/) so that they do not evict the host's entries.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2_CPU = "haswell"  # LLVM's name of an AVX2 CPU without AVX-512
CACHE = ROOT / "bench_data" / f"numba-{AVX2_CPU}"
ISAS = ("host", "avx2")


def check(targets: str) -> list[str]:
    """The comma-separated `targets` as a list; a wrong name stops the benchmark."""
    names = targets.split(",")
    for name in names:
        isa = name.partition(":")[0]
        if isa not in ISAS:
            raise SystemExit(f"--targets: {name!r} is not host or avx2 (with an optional :PATH)")
    return names


def target_env(target: str, base: dict | None = None) -> dict:
    """The environment (`base`'s, default os.environ) of a process run on `target`."""
    isa, _, path = target.partition(":")
    env = dict(os.environ if base is None else base)
    if isa == "avx2":
        env.update(NUMBA_CPU_NAME=AVX2_CPU, NUMBA_CPU_FEATURES="", NUMBA_CACHE_DIR=str(CACHE))
    if path:
        env["YT8M_COMPRESS"] = path
    return env


def describe() -> str:
    """This process's numba target, for a benchmark's output: LLVM's CPU name, AVX-512
    or AVX2 as LLVM compiles for it, and the top-k's compress path."""
    from predict import simd

    isa = simd.target_isa()
    kind = "AVX-512" if isa.compress else "AVX2" if isa.avx2 else "no AVX2"
    return f"{isa.cpu}, {kind}, {simd.compress_path()} path"
