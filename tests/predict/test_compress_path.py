"""The top-k compare-and-compress path follows numba's compile target (predict/simd.py)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.jit import JIT_ENABLED
from predict import simd

ROOT = Path(__file__).resolve().parents[2]
X86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                         reason="LLVM CPU names of x86")


@pytest.fixture
def fresh_choice():
    """Forget the cached probe and choice before and after the test."""
    simd.target_isa.cache_clear()
    simd.compress_path.cache_clear()
    yield
    simd.target_isa.cache_clear()
    simd.compress_path.cache_clear()


@X86
@pytest.mark.parametrize("cpu,features,path", [
    ("haswell", "", "permute"),  # AVX2, no AVX-512
    ("znver3", "", "permute"),  # AMD before Zen 4
    ("x86-64", "", "scalar"),  # SSE2 only
    ("skylake-avx512", "", "compress"),
    ("haswell", "+avx2,+avx512f,+avx512bw,+avx512vl", "compress"),  # the features decide
    ("skylake-avx512", "-avx512f,-avx512bw", "permute"),
])
def test_path_follows_numba_target(monkeypatch, fresh_choice, cpu, features, path):
    """The probe reads what LLVM makes of the IR for numba's CPU name and features
    (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, here set on numba's config)."""
    from numba.core import config

    monkeypatch.delenv(simd.PATH_ENV, raising=False)
    monkeypatch.setattr(config, "CPU_NAME", cpu)
    monkeypatch.setattr(config, "CPU_FEATURES", features)
    assert simd.target_isa().cpu == cpu
    assert simd.compress_path() == path


@X86
def test_name_alone_keeps_the_host_features(monkeypatch, fresh_choice):
    """NUMBA_CPU_NAME=haswell without NUMBA_CPU_FEATURES keeps the host's features (numba's
    rule): on an AVX-512 host that is still an AVX-512 build."""
    from numba.core import config

    monkeypatch.delenv(simd.PATH_ENV, raising=False)
    host = simd.target_isa()
    simd.target_isa.cache_clear()
    monkeypatch.setattr(config, "CPU_NAME", "haswell")
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    assert simd.target_isa().compress == host.compress


def test_forced_path_and_a_wrong_one(monkeypatch, fresh_choice):
    monkeypatch.setenv(simd.PATH_ENV, "scalar")
    assert simd.compress_path() == "scalar" and simd.path_index() == simd.PATHS.index("scalar")
    assert simd.path_index("permute") == 1
    simd.compress_path.cache_clear()
    monkeypatch.setenv(simd.PATH_ENV, "avx2")
    with pytest.raises(ValueError, match="YT8M_COMPRESS='avx2': expected one of compress, "
                                         "permute, scalar"):
        simd.compress_path()


def test_permute_table_lists_the_set_lanes():
    table = simd._permute_table()
    assert len(table) == 256 and all(len(row) == 8 for row in table)
    for mask in (0, 1, 0b10110010, 255):
        lanes = [j for j in range(8) if mask >> j & 1]
        assert table[mask][:len(lanes)] == lanes


@X86
@pytest.mark.skipif(not JIT_ENABLED, reason="compiles for another CPU")
def test_every_path_compiled_for_avx2_equals_twin(tmp_path):
    """Compiled for an AVX2-only CPU (haswell, its own features, a cache of its own: numba
    keys its cache on them), the target's path is permute, the kernel uses no AVX-512
    register, and every path gives what the twin does (the top-k scan itself, compiled so, is checked at full size by
    benchmarks/bench_topk.py --targets, which compares the selections of both targets)."""
    code = (
        "from predict import simd; from tests.predict import test_topk_twin as t\n"
        "for path in simd.PATHS: t.check_compress_path(path)\n"
        "asm = ''.join(t._compress_kernel.inspect_asm().values())\n"
        "print(simd.compress_path(), 'zmm' in asm, 'vpermd' in asm)\n"
    )
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="",
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    env.pop(simd.PATH_ENV, None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert res.stdout.split() == ["permute", "False", "True"]  # no AVX-512 register, vpermd
