#!/usr/bin/python3
"""Convert an official YOLOv9 PyTorch checkpoint (.pt) to safetensors for gelan.c.

    tools/pt2safetensors.py --repo ~/yolov9 yolov9-t.pt yolov9-t.safetensors --cfg yolov9-t.yaml

The checkpoint is a pickle of the model object, so the official code must be
importable while it loads: pass the YOLOv9 checkout with --repo. The tensors are
the model's float32 state_dict under the official names (`model.22.dfl.conv.weight`,
...), without the BatchNorm `num_batches_tracked` counters. Metadata: `source` (the
.pt file name), `cfg` (the YAML text, with --cfg), and `names` (the class names as a
JSON list, when the model carries them). gelan needs `cfg` to rebuild the model;
without it, pass --cfg to gelan instead.

Only python3-torch and python3-numpy (Debian packages) are needed; the safetensors
file is written here directly (8-byte little-endian header length, JSON header
padded with spaces to a multiple of 8, raw little-endian data; tensors laid out
like the official writer: larger dtypes first, then by name).

The shebang names Debian's python3 on purpose: that is where python3-torch lives.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

# torch dtype -> (safetensors dtype, numpy little-endian dtype of the raw bytes)
DTYPES = {
    torch.float32: ("F32", "<f4"),
    torch.float16: ("F16", "<f2"),
    torch.bfloat16: ("BF16", "<u2"),  # numpy has no bfloat16: the bits go through as uint16
    torch.float64: ("F64", "<f8"),
    torch.int8: ("I8", "i1"),
    torch.uint8: ("U8", "u1"),
    torch.int16: ("I16", "<i2"),
    torch.int32: ("I32", "<i4"),
    torch.int64: ("I64", "<i8"),
    torch.bool: ("BOOL", "u1"),
}


def tensor_bytes(t):
    """The raw little-endian bytes of a tensor, row-major."""
    t = t.detach().cpu().contiguous()
    st_dtype, np_dtype = DTYPES[t.dtype]
    if t.dtype == torch.bfloat16:
        arr = t.view(torch.int16).numpy().view(np.uint16)
    elif t.dtype == torch.bool:
        arr = t.to(torch.uint8).numpy()
    else:
        arr = t.numpy()
    return st_dtype, np.ascontiguousarray(arr, dtype=np_dtype).tobytes()


def write_safetensors(path, tensors, metadata):
    """tensors: {name: torch.Tensor}; metadata: {str: str}. Atomic (temp + rename)."""
    items = []
    for name, t in tensors.items():
        st_dtype, raw = tensor_bytes(t)
        items.append((name, st_dtype, list(t.shape), raw, t.element_size()))
    items.sort(key=lambda it: (-it[4], it[0]))
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, st_dtype, shape, raw, _ in items:
        header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for it in items:
                f.write(it[3])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_model_state(path):
    """The float32 state_dict of the checkpoint's EMA model (else its model), and
    the class names if the model has them."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as e:
        sys.exit("%s: %s - pass the YOLOv9 checkout with --repo so the pickled classes import" % (path, e))
    model = ckpt
    if isinstance(ckpt, dict) and ("ema" in ckpt or "model" in ckpt):
        model = ckpt.get("ema")
        if model is None:
            model = ckpt.get("model")
        if model is None:
            sys.exit("%s: both 'ema' and 'model' are empty" % path)
    names = getattr(model, "names", None)
    if isinstance(model, torch.nn.Module):
        state = model.float().state_dict()
    elif isinstance(model, dict) and all(torch.is_tensor(v) for v in model.values()):
        state = {k: v.float() if v.is_floating_point() else v for k, v in model.items()}
    else:
        sys.exit("%s: expected a checkpoint dict with 'model'/'ema', a module or a state_dict, got %s"
                 % (path, type(model).__name__))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if isinstance(names, dict):  # newer code keeps {index: name}
        names = [names[k] for k in sorted(names)]
    if not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        names = None
    return state, names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="official .pt file")
    ap.add_argument("output", help=".safetensors file to write")
    ap.add_argument("--cfg", help="model YAML to embed as metadata 'cfg'")
    ap.add_argument("--repo", help="YOLOv9 checkout to put on sys.path while unpickling")
    args = ap.parse_args()
    if args.repo:
        sys.path.insert(0, os.path.abspath(args.repo))
    state, names = load_model_state(args.checkpoint)
    for k, v in state.items():
        if v.dtype not in DTYPES:
            sys.exit("%s: tensor %s has dtype %s, which this tool does not convert" % (args.checkpoint, k, v.dtype))
    metadata = {"source": os.path.basename(args.checkpoint)}
    if args.cfg:
        with open(args.cfg, encoding="utf-8") as f:
            metadata["cfg"] = f.read()
    if names is not None:
        metadata["names"] = json.dumps(list(names), ensure_ascii=False)
    write_safetensors(args.output, state, metadata)
    print("%s: %d tensors, %.1f MB" % (args.output, len(state), os.path.getsize(args.output) / 1e6))


if __name__ == "__main__":
    main()
