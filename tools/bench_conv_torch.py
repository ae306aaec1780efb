#!/usr/bin/env python3
"""PyTorch side of bench/conv_bench.c: times F.conv2d on the same shapes, the same way.

Prints "ready <torch version>, <n> threads" once torch is imported (or exits with status 1 if
it cannot be), then reads one conv per line on stdin -- cin h w cout k stride groups bias
needs_dx (batch 1, padding k//2) -- and answers each with "fwd_seconds fwd_bwd_seconds".
Each time is the minimum over repetitions after one warm-up, within --time seconds per shape
(at most 10 repetitions, at least 2), exactly as the C side does. The forward runs under
no_grad; forward + backward computes dW, db and (when needs_dx) dx, with the gradients set
to None each time (fresh buffers, as after optimizer.zero_grad()). --cpu-time measures process
CPU time instead of wall time (meaningful with one thread, as on the C side).

    echo "64 80 80 128 3 1 1 0 1" | python3 tools/bench_conv_torch.py --threads 2
"""
import argparse
import os
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"no torch: {e}", flush=True)
    sys.exit(1)


clock = time.perf_counter


def time_min(fn, budget):
    fn()
    best, start, r = float("inf"), clock(), 0
    while r < 10 and (r < 2 or clock() - start < budget):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
        r += 1
    return best


def time_conv(cin, h, w, cout, k, s, g, bias, needs_dx, budget):
    x = torch.rand(1, cin, h, w) * 2 - 1
    wt = (torch.rand(cout, cin // g, k, k) * 2 - 1) * 0.1
    b = torch.zeros(cout) if bias else None
    with torch.no_grad():
        gy = torch.rand_like(F.conv2d(x, wt, b, s, k // 2, 1, g)) * 2 - 1

    def fwd():
        with torch.no_grad():
            F.conv2d(x, wt, b, s, k // 2, 1, g)

    def fwd_bwd():
        for t in (x, wt, b):
            if t is not None:
                t.grad = None
        F.conv2d(x, wt, b, s, k // 2, 1, g).backward(gy)

    t_fwd = time_min(fwd, budget)
    x.requires_grad_(bool(needs_dx))
    wt.requires_grad_(True)
    if b is not None:
        b.requires_grad_(True)
    return t_fwd, time_min(fwd_bwd, budget)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time", type=float, default=0.05, help="seconds of repetitions per shape")
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    args = ap.parse_args()
    if args.cpu_time:
        global clock
        clock = time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    wait = os.environ.get("OMP_WAIT_POLICY", "default")
    print(f"ready {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={wait}", flush=True)
    for line in sys.stdin:
        if line.strip():
            t_fwd, t_fb = time_conv(*map(int, line.split()), args.time)
            print(f"{t_fwd:.9f} {t_fb:.9f}", flush=True)


if __name__ == "__main__":
    main()
