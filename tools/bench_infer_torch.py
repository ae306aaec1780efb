#!/usr/bin/env python3
"""PyTorch side of bench/infer_bench.c.

Reads an inference model written by the benchmark (safetensors, metadata
`graph` in the gelan-infer/1 text format of docs/FORMATS.md), builds the same
network from torch.nn.functional ops (F.conv2d for every conv, so PyTorch runs
its own oneDNN/mkldnn kernels), times it with the given number of threads, and
checks it against the output gelan-infer computed for the same input.

Prints one JSON line: {"avg_ms", "min_ms", "max_ms", "max_abs_diff", "max_abs"}.
"""
import argparse
import json
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}, expected F32")
        b, e = info["data_offsets"]
        arr = np.frombuffer(data, dtype="<f4", count=(e - b) // 4, offset=8 + n + b)
        tensors[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return meta, tensors


def parse_graph(text):
    nodes = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tok = line.split()
        keys = dict(t.split("=", 1) for t in tok[3:])
        nodes.append((tok[0], tok[1].split(","), tok[2].split(","), keys))
    return nodes


def detect(levels, nc, reg_max, strides):
    """The official DDetect eval decode (models/yolo.py, utils/tal/anchor_generator.py)."""
    n = levels[0].shape[0]
    no = 4 * reg_max + nc
    anchors, stride_t = [], []
    for x, s in zip(levels, strides):
        h, w = x.shape[2:]
        sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_t.append(torch.full((h * w, 1), s))
    anchors = torch.cat(anchors).transpose(0, 1)
    stride_t = torch.cat(stride_t).transpose(0, 1)
    x = torch.cat([xi.view(n, no, -1) for xi in levels], 2)
    box, cls = x.split((4 * reg_max, nc), 1)
    a = box.shape[2]
    prob = box.view(n, 4, reg_max, a).softmax(2)
    dist = (prob * torch.arange(reg_max, dtype=torch.float32).view(1, 1, reg_max, 1)).sum(2)
    lt, rb = dist.chunk(2, 1)
    x1y1, x2y2 = anchors - lt, anchors + rb
    dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride_t
    return torch.cat((dbox, cls.sigmoid()), 1)


class GraphNet(torch.nn.Module):
    def __init__(self, graph, tensors):
        super().__init__()
        self.nodes = parse_graph(graph)
        self.t = tensors

    def forward(self, x):
        env = {"input": x}
        for op, outs, ins, k in self.nodes:
            a = env[ins[0]]
            if op == "conv":
                kk = int(k["k"])
                d = int(k.get("d", 1))
                p = int(k.get("p", (d * (kk - 1) + 1) // 2))
                y = F.conv2d(a, self.t[k["w"]], self.t[k["b"]] if "b" in k else None, int(k.get("s", 1)), p, d,
                             int(k.get("g", 1)))
                act = k.get("act", "none")
                if act == "silu":
                    y = F.silu(y)
                elif act == "relu":
                    y = F.relu(y)
                elif act == "leakyrelu":
                    y = F.leaky_relu(y, float(k.get("alpha", 0.01)))
            elif op == "maxpool":
                y = F.max_pool2d(a, int(k["k"]), int(k.get("s", k["k"])), int(k.get("p", 0)))
            elif op == "avgpool":
                y = F.avg_pool2d(a, int(k["k"]), int(k.get("s", k["k"])), int(k.get("p", 0)), False,
                                 bool(int(k.get("count_include_pad", 1))))
            elif op == "upsample":
                if "scale" in k:
                    y = F.interpolate(a, scale_factor=int(k["scale"]), mode="nearest")
                else:
                    y = F.interpolate(a, size=tuple(int(v) for v in k["size"].split(",")), mode="nearest")
            elif op == "concat":
                y = torch.cat([env[i] for i in ins], 1)
            elif op == "split":
                for name, part in zip(outs, a.split([int(v) for v in k["sizes"].split(",")], 1)):
                    env[name] = part
                continue
            elif op == "add":
                y = a + env[ins[1]]
            elif op == "detect":
                y = detect([env[i] for i in ins], int(k["nc"]), int(k.get("reg_max", 16)),
                           [float(v) for v in k["strides"].split(",")])
            else:
                raise SystemExit(f"unknown op {op}")
            env[outs[0]] = y
        return y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--io", required=True, help="safetensors with 'input' and gelan-infer's 'output.pred'")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta, weights = read_safetensors(args.model)
    _, io = read_safetensors(args.io)
    net = GraphNet(meta["graph"], weights).eval()
    x = io["input"]
    times = []
    with torch.no_grad():
        y = net(x)
        for _ in range(args.warmup):
            net(x)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - t0) * 1e3)
    ours = next(v for name, v in io.items() if name.startswith("output."))
    print(json.dumps({"avg_ms": sum(times) / len(times), "min_ms": min(times), "max_ms": max(times),
                      "max_abs_diff": float((y - ours).abs().max()), "max_abs": float(y.abs().max()),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    sys.exit(main())
