#!/usr/bin/python3
"""Checks tools/torchref against the golden files made with the official YOLOv9 code.

    /usr/bin/python3 tools/torchref/check_golden.py [--golden ../shared/golden] [--case NAME] [-v]

For every case: builds cfg.yaml, loads weights.safetensors by name, and compares with expected.safetensors
(and allgrads.safetensors) with the tolerances of the golden README (max|ours - golden| <= rtol*max|golden| +
atol per tensor; fg_mask and target_labels exactly):
  eval (no_grad): every `layer.*`, `output.*` / `eval.*`, `fused.output.pred` after fuse(), and `reparam.pred`
    (the single-head gelan model filled from the dual/triple one by the reparameterization mapping);
  train: the level maps, `loss.*`, `assign.*`, BN `running.*` after the forward, and every `grad.*` stored.
Prints, per case and group, the largest relative error max|ours - golden| / max|golden| and the worst tensor.
Exit status 1 if any tensor is out of tolerance.
"""
import argparse
import copy
import os
import sys

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torchref.loss import HEAD_NAMES, ComputeLoss  # noqa: E402
from torchref.model import Model, load_safetensors, load_weights, state_tensors  # noqa: E402

NEAR_ZERO = 1e-5  # max |golden| below this: judged by atol (see tolerance())
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# gelan-c.yaml at width 0.25 with the hidden widths divided by 4 by hand (golden README, "yolov9-c at width 0.25")
GELAN_C_MINI_ARGS = {("RepNCSPELAN4", (256, 128, 64, 1)): [256, 32, 16, 1],
                     ("RepNCSPELAN4", (512, 256, 128, 1)): [512, 64, 32, 1],
                     ("RepNCSPELAN4", (512, 512, 256, 1)): [512, 128, 64, 1],
                     ("RepNCSPELAN4", (256, 256, 128, 1)): [256, 64, 32, 1],
                     ("SPPELAN", (512, 256)): [512, 64]}
# case -> (gelan config, edits) for the reparameterization check
REPARAM_TARGET = {"yolov9-t_64_warm": ("gelan-t.yaml", None),
                  "yolov9-c-mini_64": ("gelan-c.yaml", GELAN_C_MINI_ARGS),
                  "yolov9-c-triple-mini_64": ("gelan-c.yaml", GELAN_C_MINI_ARGS)}


def tolerance(name, case):
    """(rtol, atol), or None for an exact comparison (golden README, "Tolerances")."""
    if name.startswith("assign."):
        if name.endswith((".fg_mask", ".target_labels")):
            return None
        return (1e-6, 0.0) if name.endswith(".target_bboxes") else (1e-3, 0.0)
    if name.startswith("grad."):
        return (2e-2, 1e-6) if case == "gelan-t_64_train" else (2e-3, 1e-6)
    if name.startswith(("loss.", "train.", "running.")):
        return (1e-3, 0.0)
    return (1e-4, 0.0)  # layer., output., eval., fused., reparam.


def resolve_weights(path):
    """gelan-t_64_train/weights.safetensors may be a small text file (or symlink) naming the calib weights."""
    if os.path.getsize(path) < 4096:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace").strip()
        if text.endswith(".safetensors"):
            return os.path.normpath(os.path.join(os.path.dirname(path), text))
    return path


def gelan_cfg(name, edits):
    with open(os.path.join(REPO, "configs", "models", name), encoding="utf-8") as f:
        d = yaml.safe_load(f)
    if edits:
        d["width_multiple"] = 0.25
        for row in d["backbone"] + d["head"]:
            key = (row[2], tuple(row[3]))
            if key in edits:
                row[3] = list(edits[key])
    return d


def reparam_model(dual, case):
    """The single-head gelan model with weights mapped from `dual` as in tools/reparameterization.ipynb:
    gelan layer i <- dual layer i+shift (i below the gelan detect index), detect cv2/cv3/dfl <- the main
    head's branches of the dual/triple detect layer."""
    name, edits = REPARAM_TARGET[case]
    gelan = Model(gelan_cfg(name, edits))
    shift = 1 if dual.model[0].type == "Silence" and gelan.model[0].type != "Silence" else 0
    g_det, d_det = len(gelan.model) - 1, len(dual.model) - 1
    h = dual.head.n_heads - 1
    rename = {"cv2": f"cv{2 + 2 * h}", "cv3": f"cv{3 + 2 * h}", "dfl": dual.head.dfl_name(h)}
    src = state_tensors(dual)
    mapped = {}
    for k in state_tensors(gelan):
        parts = k.split(".")
        i = int(parts[1])
        if i < g_det:
            parts[1] = str(i + shift)
        else:
            parts[1], parts[2] = str(d_det), rename[parts[2]]
        mapped[k] = src[".".join(parts)]
    return load_weights(gelan, mapped).eval()


def eval_outputs(model, x, case, want):
    """Every eval tensor the golden files name, computed by our model."""
    ours = {}
    head = model.head
    with torch.no_grad():
        keep = []
        out = model(x, keep)
        for i, y in enumerate(keep[:-1]):
            if isinstance(y, (tuple, list)):
                for j, piece in enumerate(y):
                    ours[f"layer.{i}.{j}"] = piece
            else:
                ours[f"layer.{i}"] = y
        if head.n_heads == 1:
            ours["output.pred"] = out[0]
            ours.update({f"output.level{k}": m for k, m in enumerate(out[1])})
        else:
            # all heads' maps and predictions (TripleDDetect's eval returns only main: decode the rest here)
            xs = [keep[j] for j in head.f]
            maps = head.level_maps(xs)
            for h, name in enumerate(HEAD_NAMES[head.n_heads]):
                ours[f"eval.pred.{name}"] = head.decode(maps[h], h)
                ours.update({f"eval.level.{name}{k}": m for k, m in enumerate(maps[h])})
            main = out[0][-1] if head.n_heads == 2 else out[0]
            assert torch.equal(main, ours["eval.pred.main"]), "the forward's main prediction differs from decode()"
        if "fused.output.pred" in want:
            fused = copy.deepcopy(model).fuse()
            ours["fused.output.pred"] = fused(x)[0]
        if "reparam.pred" in want:
            ours["reparam.pred"] = reparam_model(model, case)(x)[0]
    return ours


def train_outputs(model, x, targets):
    """One train-mode forward, the loss and its backward: maps, loss items, assignment, BN buffers, grads."""
    ours = {}
    model.train()
    model.zero_grad(set_to_none=True)
    preds = model(x)
    compute_loss = ComputeLoss(model)
    total, items = compute_loss(preds, targets)
    total.backward()
    heads = [preds] if model.head.n_heads == 1 else preds
    for name, maps in zip(HEAD_NAMES[model.head.n_heads], heads):
        ours.update({f"train.level.{name}{k}": m.detach() for k, m in enumerate(maps)})
        labels, bboxes, scores, fg = compute_loss.last_assign[name]
        ours.update({f"assign.{name}.target_labels": labels, f"assign.{name}.target_bboxes": bboxes,
                     f"assign.{name}.target_scores": scores, f"assign.{name}.fg_mask": fg})
    ours.update({"loss.box": items[0], "loss.cls": items[1], "loss.dfl": items[2], "loss.total": total.detach()})
    for k, v in state_tensors(model).items():
        if "running_" in k:
            ours[f"running.{k}"] = v
    for k, p in model.named_parameters():
        if p.grad is not None:
            ours[f"grad.{k}"] = p.grad
    return ours


def compare(name, ours, golden, case):
    """(ok, max|ours - golden|, max|golden|) of one tensor."""
    if ours is None:
        print(f"    {name}: not computed")
        return False, float("inf"), 0.0
    ours = ours.detach().float()
    if tuple(ours.shape) != tuple(golden.shape):
        print(f"    {name}: shape {list(ours.shape)}, golden {list(golden.shape)}")
        return False, float("inf"), 0.0
    diff = (ours - golden).abs().max().item() if golden.numel() else 0.0
    scale = golden.abs().max().item() if golden.numel() else 0.0
    tol = tolerance(name, case)
    ok = diff == 0.0 if tol is None else diff <= tol[0] * scale + tol[1]
    return ok, diff, scale


def check_case(golden_dir, case, verbose):
    d = os.path.join(golden_dir, case)
    inputs, _ = load_safetensors(os.path.join(d, "input.safetensors"))
    expected, _ = load_safetensors(os.path.join(d, "expected.safetensors"))
    allgrads = os.path.join(d, "allgrads.safetensors")
    if os.path.exists(allgrads):
        expected.update(load_safetensors(allgrads)[0])
    weights, _ = load_safetensors(resolve_weights(os.path.join(d, "weights.safetensors")))
    torch.manual_seed(0)
    model = Model(os.path.join(d, "cfg.yaml"))

    ours = {}
    if any(k.startswith(("layer.", "output.", "eval.")) for k in expected):
        load_weights(model, weights).eval()
        ours.update(eval_outputs(model, inputs["input"], case, expected))
    if "loss.total" in expected:
        load_weights(model, weights)
        ours.update(train_outputs(model, inputs["input"], inputs["targets"]))

    # per group: the largest relative error max|diff| / max|golden|; tensors whose golden values are all
    # below NEAR_ZERO (analytically zero gradients, covered by atol) are reported by absolute error instead
    groups = {}
    failed = 0
    for name in sorted(expected):
        ok, diff, scale = compare(name, ours.get(name), expected[name], case)
        parts = name.split(".")
        group = f"{parts[0]}.{parts[-1]}" if parts[0] == "assign" else parts[0]
        g = groups.setdefault(group, {"n": 0, "bad": 0, "rel": -1.0, "worst": name, "zero": 0, "zero_abs": 0.0})
        g["n"] += 1
        if scale < NEAR_ZERO and tolerance(name, case) and tolerance(name, case)[1] > 0:
            g["zero"] += 1
            g["zero_abs"] = max(g["zero_abs"], diff)
        else:
            rel = diff / scale if scale > 0 else diff
            if rel > g["rel"]:
                g["rel"], g["worst"] = rel, name
        if not ok:
            g["bad"] += 1
            failed += 1
            print(f"    FAIL {name}: max abs err {diff:.3g}, max |golden| {scale:.3g}, "
                  f"tolerance {tolerance(name, case)}")
        elif verbose:
            print(f"    ok   {name}: max abs err {diff:.3g}, max |golden| {scale:.3g}")
    print(f"{case}: {len(expected)} tensors, {failed} out of tolerance")
    for group, g in groups.items():
        tol = tolerance(g["worst"], case)
        tol_text = "exact" if tol is None else f"rtol {tol[0]:g}"
        line = f"  {group:<22} {g['n']:>4} tensors  max rel err {max(g['rel'], 0.0):.2e} ({tol_text})  {g['worst']}"
        if g["zero"]:
            line += f"; {g['zero']} near-zero tensors: max abs err {g['zero_abs']:.1e} (atol 1e-06)"
        print(line + (f"  {g['bad']} FAILED" if g["bad"] else ""))
    return len(expected), failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--golden", default=os.path.join(REPO, "..", "shared", "golden"))
    ap.add_argument("--case", action="append", help="only this case (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every tensor")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = args.case or sorted(c for c in os.listdir(args.golden)
                                if os.path.exists(os.path.join(args.golden, c, "cfg.yaml")))
    total = bad = 0
    for case in cases:
        n, f = check_case(args.golden, case, args.verbose)
        total, bad = total + n, bad + f
    print(f"check_golden: {total - bad} passed, {bad} failed ({len(cases)} cases)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
