"""Benchmark NeXtVLAD: the project's bmm aggregation against the naive formula that
materialises the residual tensor (B, L, K, G, d), inside the full nxvlad-2 model.

    .venv/bin/python benchmarks/bench_nextvlad.py --help
    .venv/bin/python benchmarks/bench_nextvlad.py                  # B=48, L=150, CPU
    .venv/bin/python benchmarks/bench_nextvlad.py --device cuda    # on a GPU

Each implementation runs in its own subprocess (same seed, same model weights, same
uint8 batch with random lengths and its mask): one warm-up step, then --repeats
training steps (forward + Eq. 1 loss + backward); the median step time is reported.
Peak memory: on CPU, the process's RSS high-water mark (ru_maxrss) and its rise above
the RSS measured just before the first step (activations, gradients and temporaries);
on CUDA, torch.cuda.max_memory_allocated, and its rise above the memory allocated
before the first step. The naive module is tests/trainer/naive_nextvlad.py (it reads
the same parameters). No files are written.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMPLS = ("bmm", "naive")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _worker(args) -> dict:
    import torch

    from tests.trainer.naive_nextvlad import NaiveNeXtVLAD
    from trainer.layers.nextvlad import NeXtVLAD
    from trainer.losses import video_loss
    from trainer.registry import build

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(args.variant).to(device).train()
    if args.impl == "naive":
        for m in model.modules():
            if type(m) is NeXtVLAD:
                m.__class__ = NaiveNeXtVLAD
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (args.batch, args.length, 1152), generator=g, dtype=torch.uint8)
    lengths = torch.randint(args.length // 2, args.length + 1, (args.batch,), generator=g)
    mask = torch.arange(args.length)[None, :] < lengths[:, None]
    labels = torch.rand(args.batch, 1000, generator=g) < 0.005
    frames, mask, labels = frames.to(device), mask.to(device), labels.to(device)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model.zero_grad(set_to_none=True)
        video_loss(model(frames, mask), labels).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    if device.type == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    times = [step() for _ in range(1 + args.repeats)][1:]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "impl": args.impl,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_bytes": peak,
        "peak_rise_bytes": peak - base,
    }


def _run(impl: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--variant", args.variant]
    cmd += ["--batch", str(args.batch), "--length", str(args.length)]
    cmd += ["--repeats", str(args.repeats), "--device", args.device]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{impl} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--variant", default="nxvlad-2", help="a registered NeXtVLAD video model")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--length", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.impl = args.worker
        print(json.dumps(_worker(args)))
        return
    gib = 1 << 30
    print(f"{args.variant}, B={args.batch}, L={args.length}, device={args.device}, "
          f"{args.repeats} timed steps after 1 warm-up, one subprocess per implementation")
    res = {impl: _run(impl, args) for impl in IMPLS}
    for impl, r in res.items():
        print(f"{impl:6s} step median {r['median_s']:.3f} s  "
              f"peak {r['peak_bytes'] / gib:.2f} GiB  rise {r['peak_rise_bytes'] / gib:.2f} GiB  "
              f"(steps: {', '.join(f'{t:.2f}' for t in r['times_s'])})")
    fast, slow = res["bmm"], res["naive"]
    print(f"speed-up (naive / bmm time): {slow['median_s'] / fast['median_s']:.2f}x")
    print(f"peak memory bmm / naive: {fast['peak_bytes'] / slow['peak_bytes']:.3f} (total), "
          f"{fast['peak_rise_bytes'] / slow['peak_rise_bytes']:.3f} (rise above the model)")


if __name__ == "__main__":
    main()
