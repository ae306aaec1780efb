#!/usr/bin/python3
"""Times one YOLOv9 / GELAN training step in PyTorch (tools/torchref: the official model and TAL loss).

    /usr/bin/python3 tools/bench_train_torch.py --cfg configs/models/yolov9-t.yaml --img 320 --batch 4 --threads 2

A step is forward (train mode) + loss (assigner, BCE, CIoU, DFL) + backward, and with --step also
clip_grad_norm_(10) + the official SGD step (Nesterov, momentum 0.937, lr 0.01, weight decay 5e-4 on non-BN
weights), as train_dual.py does. Each step gets its own random batch, uniform in [0,1), with 3-5 random
targets per image (class uniform, w,h in [0.1,0.6], cx,cy in [0.15,0.85]), like the golden warm steps;
batches are made before timing. Gradients are set to None between steps (fresh buffers).

Prints machine-readable lines (milliseconds; median/min/max over --iters timed steps after --warmup):
    torch_train_ms median=... min=... max=... iters=N
    torch_train_breakdown_ms forward=... loss=... backward=... [step=...]   (medians of each phase)
    torch_train_cpu_ms median=... per_thread=...   (CPU time of all threads per step, and that / threads)
On a busy machine the wall times grow with the competition for the cores. The CPU time grows less (with
OMP_WAIT_POLICY=PASSIVE, whose waiting threads sleep), but shared caches and SMT siblings inflate it too:
only numbers from a quiet machine compare with other runs.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchref.loss import ComputeLoss  # noqa: E402
from torchref.model import Model, load_weights  # noqa: E402


def random_targets(gen, batch, nc):
    """[M, 6] rows (image, class, cx, cy, w, h), 3-5 boxes per image, normalised coordinates."""
    rows = []
    for j in range(batch):
        for _ in range(int(torch.randint(3, 6, (1,), generator=gen))):
            cls = float(torch.randint(0, nc, (1,), generator=gen))
            cx, cy = (0.15 + 0.7 * torch.rand(2, generator=gen)).tolist()
            w, h = (0.1 + 0.5 * torch.rand(2, generator=gen)).tolist()
            rows.append([j, cls, cx, cy, w, h])
    return torch.tensor(rows)


def official_sgd(model, lr=0.01, momentum=0.937, decay=5e-4):
    """utils/torch_utils.smart_optimizer(model, 'SGD', ...): weight decay only on the weights of non-BN modules."""
    decay_p, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "weight" and not isinstance(module, torch.nn.BatchNorm2d):
                decay_p.append(p)
            else:
                no_decay.append(p)
    return torch.optim.SGD([{"params": no_decay, "weight_decay": 0.0}, {"params": decay_p, "weight_decay": decay}],
                           lr=lr, momentum=momentum, nesterov=True)


def machine_note():
    """The 1-minute load average and the OpenMP wait policy: with more runnable threads than cores, the
    default (spinning) OpenMP barriers of PyTorch slow down by up to 10x; OMP_WAIT_POLICY=PASSIVE avoids that."""
    return f"load {os.getloadavg()[0]:.1f} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", required=True, help="model YAML (official syntax)")
    ap.add_argument("--weights", help="safetensors with official names (default: fresh init, seeded)")
    ap.add_argument("--img", type=int, default=320)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--step", action="store_true", help="also time clip_grad_norm_ + the SGD step")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Model(args.cfg)
    if args.weights:
        load_weights(model, args.weights)
    model.train()
    loss_fn = ComputeLoss(model)
    optimizer = official_sgd(model) if args.step else None

    gen = torch.Generator().manual_seed(1000 + args.seed)
    batches = [(torch.rand(args.batch, 3, args.img, args.img, generator=gen),
                random_targets(gen, args.batch, model.head.nc)) for _ in range(args.warmup + args.iters)]

    phases = {"forward": [], "loss": [], "backward": [], "step": []}
    totals, cpu = [], []
    for it, (x, targets) in enumerate(batches):
        model.zero_grad(set_to_none=True)
        c0 = time.process_time()
        t0 = time.perf_counter()
        preds = model(x)
        t1 = time.perf_counter()
        loss, _ = loss_fn(preds, targets)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if optimizer:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
            optimizer.step()
        t4 = time.perf_counter()
        c4 = time.process_time()
        if it < args.warmup:
            continue
        for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            phases[name].append(dt * 1e3)
        totals.append((t4 - t0) * 1e3)
        cpu.append((c4 - c0) * 1e3)

    print(f"# {os.path.basename(args.cfg)} img {args.img} batch {args.batch} threads {torch.get_num_threads()} "
          f"torch {torch.__version__} params {model.num_params():,}"
          f"{' (+ SGD step)' if args.step else ''}; {machine_note()}")
    print(f"torch_train_ms median={statistics.median(totals):.1f} min={min(totals):.1f} max={max(totals):.1f} "
          f"iters={len(totals)}")
    parts = [f"{name}={statistics.median(v):.1f}" for name, v in phases.items() if name != "step" or args.step]
    print("torch_train_breakdown_ms " + " ".join(parts))
    print(f"torch_train_cpu_ms median={statistics.median(cpu):.1f} "
          f"per_thread={statistics.median(cpu) / torch.get_num_threads():.1f}")


if __name__ == "__main__":
    main()
