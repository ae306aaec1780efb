#!/usr/bin/python3
"""Times fused single-head YOLOv9 / GELAN inference in PyTorch (tools/torchref), batch 1.

    /usr/bin/python3 tools/bench_model_torch.py --cfg configs/models/gelan-t.yaml --img 640 --threads 2

Builds the model (fresh seeded init, or --weights W.safetensors loaded by official name; a file whose
metadata holds `cfg` needs no --cfg), applies the official fuse() (BN folded, RepConvN merged), and times the
eval forward (including the DFL decode, as the official DDetect returns it) under torch.inference_mode on
one uniform random image. Prints (milliseconds over --runs timed runs after --warmup):
    torch_infer_ms median=... min=... max=... runs=N
    torch_infer_cpu_ms median=... per_thread=...   (CPU time of all threads per run, and that / threads;
                                                    see tools/bench_train_torch.py)
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchref.model import Model, load_safetensors, load_weights  # noqa: E402


def machine_note():
    """The 1-minute load average and the OpenMP wait policy: with more runnable threads than cores, the
    default (spinning) OpenMP barriers of PyTorch slow down by up to 10x; OMP_WAIT_POLICY=PASSIVE avoids that."""
    return f"load {os.getloadavg()[0]:.1f} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", help="model YAML (default: the weights' `cfg` metadata)")
    ap.add_argument("--weights", help="safetensors with official names")
    ap.add_argument("--img", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tensors, meta = load_safetensors(args.weights) if args.weights else (None, {})
    cfg = args.cfg or meta.get("cfg")
    if not cfg:
        ap.error("--cfg is needed (the weights carry no `cfg` metadata)")
    model = Model(cfg)
    if model.head.n_heads != 1:
        sys.exit(f"{args.cfg or args.weights}: a {type(model.head).__name__} model; this benchmark times single-head "
                 "(DDetect) models - convert the dual/triple model to its gelan config first")
    if tensors is not None:
        load_weights(model, tensors)
    model.eval().fuse()

    x = torch.rand(1, 3, args.img, args.img, generator=torch.Generator().manual_seed(1234))
    times, cpu = [], []
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            c0, t0 = time.process_time(), time.perf_counter()
            model(x)
            t1, c1 = time.perf_counter(), time.process_time()
            if i >= args.warmup:
                times.append((t1 - t0) * 1e3)
                cpu.append((c1 - c0) * 1e3)
    name = os.path.basename(args.cfg) if args.cfg else os.path.basename(args.weights)
    print(f"# {name} fused img {args.img} batch 1 threads {torch.get_num_threads()} torch {torch.__version__} "
          f"params {model.num_params():,}; {machine_note()}")
    print(f"torch_infer_ms median={statistics.median(times):.1f} min={min(times):.1f} max={max(times):.1f} "
          f"runs={len(times)}")
    print(f"torch_infer_cpu_ms median={statistics.median(cpu):.1f} "
          f"per_thread={statistics.median(cpu) / torch.get_num_threads():.1f}")


if __name__ == "__main__":
    main()
