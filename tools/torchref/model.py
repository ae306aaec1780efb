"""YOLOv9 / GELAN in plain PyTorch, built from the official YAML syntax.

A benchmark peer for gelan.c, written from the official semantics (WongKinYiu/yolov9 models/yolo.py and
models/common.py at the golden commit, as documented in ../shared/golden/README.md), not copied. Module
and attribute names follow the official classes, so `state_dict()` names are the official ones
(`model.3.cv2.0.m.0.cv1.conv1.conv.weight`, `model.22.dfl.conv.weight`, ...) and safetensors weights from
gelan.c or tools/pt2safetensors.py load by name.

    model = Model("configs/models/gelan-t.yaml")
    load_weights(model, "weights.safetensors")
    model.eval(); pred, levels = model(x)     # decoded [N, 4+nc, A] and the raw level maps
    model.train(); levels = model(x)          # raw maps, the input of loss.ComputeLoss
    model.fuse()                              # BN folded, RepConvN merged (eval only afterwards)
"""
import ast
import json
import math
import re
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

BN_EPS = 1e-3  # set by the official initialize_weights() after construction
BN_MOMENTUM = 0.03
REG_MAX = 16  # DFL bins per box side


def make_activation(text):
    """An activation module from the YAML `activation` string, e.g. 'nn.LeakyReLU(0.1)'. None -> SiLU.

    Activations are in-place, as the official initialize_weights() leaves them."""
    if not text:
        return nn.SiLU(inplace=True)
    m = re.fullmatch(r"\s*nn\.(\w+)\((.*)\)\s*", text)
    if not m or not hasattr(nn, m.group(1)):
        raise ValueError(f"activation {text!r}: expected nn.Name(args), e.g. nn.LeakyReLU(0.1)")
    args = ast.literal_eval(f"({m.group(2)},)") if m.group(2).strip() else ()
    act = getattr(nn, m.group(1))(*args)
    if hasattr(act, "inplace"):
        act.inplace = True
    return act


def autopad(k, p=None, d=1):
    """'Same' padding for odd kernels, as the official autopad()."""
    if d > 1:
        k = d * (k - 1) + 1
    return k // 2 if p is None else p


def make_divisible(x, divisor):
    return math.ceil(x / divisor) * divisor


# ---- blocks (models/common.py) --------------------------------------------------------------------------------


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation. After fuse(): conv has a bias, bn is None."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True, act_fn=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        if act is True:
            self.act = act_fn() if act_fn else nn.SiLU(inplace=True)
        else:
            self.act = nn.Identity()

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def fuse(self):
        if self.bn is not None:
            self.conv = fold_bn(self.conv.weight, self.bn, self.conv)
            self.bn = None


def fold_bn_tensors(weight, bn):
    """(w * gamma/std, beta - mean * gamma/std) for a bias-free conv followed by eval-mode BN."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def fold_bn(weight, bn, like):
    """A new Conv2d with bias, shaped like `like`, holding `weight` with `bn` folded in."""
    w, b = fold_bn_tensors(weight, bn)
    conv = nn.Conv2d(like.in_channels, like.out_channels, like.kernel_size, like.stride, like.padding,
                     like.dilation, like.groups, bias=True)
    conv.weight.data = w.detach().clone()
    conv.bias.data = b.detach().clone()
    return conv.requires_grad_(False)


class RepConvN(nn.Module):
    """act(BN(conv3x3(x)) + BN(conv1x1(x))); no identity branch (`bn` is None, as in the official class).
    fuse() merges both branches into one biased 3x3 conv named `conv`, like the official fuse_convs()."""

    def __init__(self, c1, c2, k=3, s=1, p=1, g=1, d=1, act=True, act_fn=None):
        super().__init__()
        assert k == 3 and p == 1
        self.act = (act_fn() if act_fn else nn.SiLU(inplace=True)) if act is True else nn.Identity()
        self.bn = None
        self.conv1 = Conv(c1, c2, k, s, p=p, g=g, act=False)
        self.conv2 = Conv(c1, c2, 1, s, p=p - k // 2, g=g, act=False)
        self.conv = None

    def forward(self, x):
        if self.conv is not None:
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    def fuse(self):
        if self.conv is not None:
            return
        w3, b3 = fold_bn_tensors(self.conv1.conv.weight, self.conv1.bn)
        w1, b1 = fold_bn_tensors(self.conv2.conv.weight, self.conv2.bn)
        like = self.conv1.conv
        self.conv = nn.Conv2d(like.in_channels, like.out_channels, 3, like.stride, like.padding, like.dilation,
                              like.groups, bias=True).requires_grad_(False)
        self.conv.weight.data = (w3 + F.pad(w1, [1, 1, 1, 1])).detach()  # 1x1 kernel at the 3x3 centre
        self.conv.bias.data = (b3 + b1).detach()
        del self.conv1, self.conv2


class RepNBottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, g=1, k=(3, 3), e=0.5, act_fn=None):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = RepConvN(c1, c_, k[0], 1, act_fn=act_fn)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g, act_fn=act_fn)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class RepNCSP(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, act_fn=None):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act_fn=act_fn)
        self.cv2 = Conv(c1, c_, 1, 1, act_fn=act_fn)
        self.cv3 = Conv(2 * c_, c2, 1, act_fn=act_fn)
        self.m = nn.Sequential(*(RepNBottleneck(c_, c_, shortcut, g, e=1.0, act_fn=act_fn) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class ELAN1(nn.Module):
    def __init__(self, c1, c2, c3, c4, act_fn=None):
        super().__init__()
        self.cv1 = Conv(c1, c3, 1, 1, act_fn=act_fn)
        self.cv2 = Conv(c3 // 2, c4, 3, 1, act_fn=act_fn)
        self.cv3 = Conv(c4, c4, 3, 1, act_fn=act_fn)
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1, act_fn=act_fn)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, 1))


class RepNCSPELAN4(ELAN1):
    """ELAN1 whose two 3x3 convs are preceded by a RepNCSP each (n = c5 bottlenecks)."""

    def __init__(self, c1, c2, c3, c4, c5=1, act_fn=None):
        nn.Module.__init__(self)
        self.cv1 = Conv(c1, c3, 1, 1, act_fn=act_fn)
        self.cv2 = nn.Sequential(RepNCSP(c3 // 2, c4, c5, act_fn=act_fn), Conv(c4, c4, 3, 1, act_fn=act_fn))
        self.cv3 = nn.Sequential(RepNCSP(c4, c4, c5, act_fn=act_fn), Conv(c4, c4, 3, 1, act_fn=act_fn))
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1, act_fn=act_fn)


class AConv(nn.Module):
    def __init__(self, c1, c2, act_fn=None):
        super().__init__()
        self.cv1 = Conv(c1, c2, 3, 2, 1, act_fn=act_fn)

    def forward(self, x):
        return self.cv1(F.avg_pool2d(x, 2, 1, 0, False, True))


class ADown(nn.Module):
    def __init__(self, c1, c2, act_fn=None):
        super().__init__()
        self.cv1 = Conv(c1 // 2, c2 // 2, 3, 2, 1, act_fn=act_fn)
        self.cv2 = Conv(c1 // 2, c2 // 2, 1, 1, 0, act_fn=act_fn)

    def forward(self, x):
        x1, x2 = F.avg_pool2d(x, 2, 1, 0, False, True).chunk(2, 1)
        return torch.cat((self.cv1(x1), self.cv2(F.max_pool2d(x2, 3, 2, 1))), 1)


class SP(nn.Module):
    def __init__(self, k=3, s=1):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x):
        return self.m(x)


class MP(nn.Module):
    def __init__(self, k=2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x):
        return self.m(x)


class SPPELAN(nn.Module):
    def __init__(self, c1, c2, c3, act_fn=None):
        super().__init__()
        self.cv1 = Conv(c1, c3, 1, 1, act_fn=act_fn)
        self.cv2, self.cv3, self.cv4 = SP(5), SP(5), SP(5)
        self.cv5 = Conv(4 * c3, c2, 1, 1, act_fn=act_fn)

    def forward(self, x):
        y = [self.cv1(x)]
        for m in (self.cv2, self.cv3, self.cv4):
            y.append(m(y[-1]))
        return self.cv5(torch.cat(y, 1))


class CBLinear(nn.Module):
    """A biased 1x1 conv whose output is split into the listed channel pieces (a tuple)."""

    def __init__(self, c1, c2s, k=1, s=1, p=None, g=1):
        super().__init__()
        self.c2s = c2s
        self.conv = nn.Conv2d(c1, sum(c2s), k, s, autopad(k, p), groups=g, bias=True)

    def forward(self, x):
        return self.conv(x).split(self.c2s, dim=1)


class CBFuse(nn.Module):
    """Sum of piece idx[i] of each CBLinear input, nearest-resized to the last input's size, and the last input."""

    def __init__(self, idx):
        super().__init__()
        self.idx = idx

    def forward(self, xs):
        size = xs[-1].shape[2:]
        res = [F.interpolate(x[self.idx[i]], size=size, mode="nearest") for i, x in enumerate(xs[:-1])]
        return torch.sum(torch.stack(res + xs[-1:]), dim=0)


class Silence(nn.Module):
    def forward(self, x):
        return x


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


def _seq_conv_bn(c1, c2, k, s, g, relu):
    layers = [nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(c2)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class ShuffleNetV2(nn.Module):
    """The seed team's ShuffleNetV2 unit (see configs/models/gelan-c-slim-shufflenet.yaml and nn/shufflenet.c).
    Stride 1: branch1 = 1x1+BN on the first half (the seed's projection), branch2 on the second half; stride s:
    both branches see all of x (torchvision's unit). Then concat and a 2-group channel shuffle. ReLU is fixed."""

    def __init__(self, c1, c2, stride=1):
        super().__init__()
        bf = c2 // 2
        self.stride = stride
        if stride == 1:
            self.branch1 = nn.Sequential(*_seq_conv_bn(c1 // 2, bf, 1, 1, 1, False))
        else:
            self.branch1 = nn.Sequential(*_seq_conv_bn(c1, c1, 3, stride, c1, False),
                                         *_seq_conv_bn(c1, bf, 1, 1, 1, True))
        self.branch2 = nn.Sequential(*_seq_conv_bn(c1 if stride > 1 else c1 // 2, bf, 1, 1, 1, True),
                                     *_seq_conv_bn(bf, bf, 3, stride, bf, False),
                                     *_seq_conv_bn(bf, bf, 1, 1, 1, True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, 1)
            out = torch.cat((self.branch1(x1), self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    def fuse(self):
        for seq in (self.branch1, self.branch2):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i] = fold_bn(seq[i].weight, seq[i + 1], seq[i])
                    seq[i + 1] = nn.Identity()


# ---- detection heads (models/yolo.py) ---------------------------------------------------------------------------


class DFL(nn.Module):
    """Expected value of the softmax over REG_MAX bins per box side, as a fixed 1x1 conv with weights 0..15."""

    def __init__(self, c1=REG_MAX):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape  # [N, 4*c1, A], channel = side*c1 + bin
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats, strides, offset=0.5):
    """Anchor centres in grid units (x+0.5, y+0.5; y outer, x inner; levels concatenated) and their strides."""
    points, stride_t = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[2:]
        sy, sx = torch.meshgrid(torch.arange(h, dtype=f.dtype) + offset, torch.arange(w, dtype=f.dtype) + offset,
                                indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_t.append(torch.full((h * w, 1), float(s), dtype=f.dtype))
    return torch.cat(points), torch.cat(stride_t)


def dist2bbox(distance, anchor_points, xywh=True, dim=-1):
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchor_points - lt, anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


class _MultiDetect(nn.Module):
    """The DDetect family: `n_heads` independent heads over nl levels each. Head h has box branch
    cv{2+2h}, class branch cv{3+2h} and DFL `dfl` / `dfl2` / `dfl3`, on inputs h*nl .. h*nl+nl-1."""

    n_heads = 1

    def __init__(self, nc=80, ch=(), act_fn=None):
        super().__init__()
        self.nc = nc
        self.nl = len(ch) // self.n_heads
        self.reg_max = REG_MAX
        self.no = nc + 4 * REG_MAX
        self.stride = torch.zeros(self.nl)  # set by Model from a probe forward
        for h in range(self.n_heads):
            chs = ch[h * self.nl:(h + 1) * self.nl]
            c2 = make_divisible(max(chs[0] // 4, 4 * REG_MAX, 16), 4)
            c3 = max(chs[0], min(nc * 2, 128))
            box = nn.ModuleList(nn.Sequential(Conv(x, c2, 3, act_fn=act_fn), Conv(c2, c2, 3, g=4, act_fn=act_fn),
                                              nn.Conv2d(c2, 4 * REG_MAX, 1, groups=4)) for x in chs)
            cls = nn.ModuleList(nn.Sequential(Conv(x, c3, 3, act_fn=act_fn), Conv(c3, c3, 3, act_fn=act_fn),
                                              nn.Conv2d(c3, nc, 1)) for x in chs)
            setattr(self, f"cv{2 + 2 * h}", box)
            setattr(self, f"cv{3 + 2 * h}", cls)
            setattr(self, self.dfl_name(h), DFL(REG_MAX))
        self._anchor_cache = (None, None, None)  # (level shapes, anchors [2,A], strides [1,A])

    @staticmethod
    def dfl_name(h):
        return "dfl" if h == 0 else f"dfl{h + 1}"

    def head_modules(self, h):
        return getattr(self, f"cv{2 + 2 * h}"), getattr(self, f"cv{3 + 2 * h}"), getattr(self, self.dfl_name(h))

    def level_maps(self, x):
        """Raw maps per head: maps[h][i] = cat(box 64 ch, class nc ch) of level i."""
        maps = []
        for h in range(self.n_heads):
            box, cls, _ = self.head_modules(h)
            xs = x[h * self.nl:(h + 1) * self.nl]
            maps.append([torch.cat((box[i](xs[i]), cls[i](xs[i])), 1) for i in range(self.nl)])
        return maps

    def decode(self, maps, h):
        """Eval prediction [N, 4+nc, A] of head h: (cx, cy, w, h) in pixels, then class sigmoids."""
        shapes = tuple(m.shape for m in maps)
        if self._anchor_cache[0] != shapes:
            anchors, strides = make_anchors(maps, self.stride, 0.5)
            self._anchor_cache = (shapes, anchors.transpose(0, 1), strides.transpose(0, 1))
        _, anchors, strides = self._anchor_cache
        n = maps[0].shape[0]
        box, cls = torch.cat([m.view(n, self.no, -1) for m in maps], 2).split((4 * REG_MAX, self.nc), 1)
        dfl = self.head_modules(h)[2]
        dbox = dist2bbox(dfl(box), anchors.unsqueeze(0), xywh=True, dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)

    def bias_init(self):
        """Box bias 1.0; class bias log(5 / nc / (640/s)^2): 5 objects per 640x640 image at start."""
        for h in range(self.n_heads):
            box, cls, _ = self.head_modules(h)
            for a, b, s in zip(box, cls, self.stride):
                a[-1].bias.data[:] = 1.0
                b[-1].bias.data[:self.nc] = math.log(5 / self.nc / (640 / float(s)) ** 2)


class DDetect(_MultiDetect):
    n_heads = 1

    def forward(self, x):
        maps = self.level_maps(x)[0]
        return maps if self.training else (self.decode(maps, 0), maps)


class DualDDetect(_MultiDetect):
    n_heads = 2

    def forward(self, x):
        maps = self.level_maps(x)
        if self.training:
            return maps
        return [self.decode(maps[0], 0), self.decode(maps[1], 1)], maps


class TripleDDetect(_MultiDetect):
    """Eval returns only the main head (cv6/cv7/dfl3), as the official class."""
    n_heads = 3

    def forward(self, x):
        maps = self.level_maps(x)
        return maps if self.training else (self.decode(maps[2], 2), maps[2])


DETECT_HEADS = (DDetect, DualDDetect, TripleDDetect)

# ---- the YAML builder (parse_model) -----------------------------------------------------------------------------

MODULES = {
    "Conv": Conv, "AConv": AConv, "ADown": ADown, "ELAN1": ELAN1, "RepNCSPELAN4": RepNCSPELAN4,
    "SPPELAN": SPPELAN, "ShuffleNetV2": ShuffleNetV2, "CBLinear": CBLinear, "CBFuse": CBFuse,
    "Silence": Silence, "Concat": Concat, "SP": SP, "MP": MP, "nn.Upsample": nn.Upsample,
    "nn.MaxPool2d": nn.MaxPool2d, "DDetect": DDetect, "DualDDetect": DualDDetect, "TripleDDetect": TripleDDetect,
}
# parse_model's width-scaled set at the golden commit (+ ShuffleNetV2): args[0] is c2, x width, up to x8
WIDTH_SCALED = {Conv, AConv, ADown, ELAN1, RepNCSPELAN4, SPPELAN, ShuffleNetV2}
TAKES_ACTIVATION = {Conv, AConv, ADown, ELAN1, RepNCSPELAN4, SPPELAN, DDetect, DualDDetect, TripleDDetect}


def _yaml_arg(a, names):
    """parse_model eval()s string arguments; here: known names (nc, ...), Python literals, else the string."""
    if not isinstance(a, str):
        return a
    if a in names:
        return names[a]
    try:
        return ast.literal_eval(a)
    except (ValueError, SyntaxError):
        return a


def parse_model(d, ch_in=3):
    """(nn.Sequential of layers, each with .i and .f, sorted list of layer indices whose output is reused)."""
    nc, gd, gw = d["nc"], d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    act_text = d.get("activation")
    act_fn = (lambda: make_activation(act_text)) if act_text else None
    names = {"nc": nc, "anchors": d.get("anchors"), "None": None}
    layers, save, ch = [], [], [ch_in]
    for i, (f, n, mname, args) in enumerate(d["backbone"] + d["head"]):
        if mname not in MODULES:
            raise ValueError(f"layer {i}: unknown module {mname!r} (known: {', '.join(MODULES)})")
        m = MODULES[mname]
        args = [_yaml_arg(a, names) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in WIDTH_SCALED:
            c1, c2 = ch[f], make_divisible(args[0] * gw, 8)
            args = [c1, c2, *args[1:]]
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m is CBLinear:
            c2 = args[0]
            args = [ch[f], c2, *args[1:]]
        elif m is CBFuse:
            c2 = ch[f[-1]]
        elif m in DETECT_HEADS:
            args.append([ch[x] for x in f])
        else:
            c2 = ch[f]
        kwargs = {"act_fn": act_fn} if m in TAKES_ACTIVATION else {}
        module = nn.Sequential(*(m(*args, **kwargs) for _ in range(n))) if n > 1 else m(*args, **kwargs)
        module.i, module.f, module.type = i, f, mname
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        if i == 0:
            ch = []  # `from` index i means layer i's output from here on
        ch.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


class Model(nn.Module):
    """The official DetectionModel: `model` holds the layers, so parameter names are `model.{i}....`.

    Construction follows the official one: PyTorch default init, a train-mode probe forward on
    zeros [1, ch, 256, 256] to measure the strides (BN momentum 0.1 still), the detect bias init, then
    BN eps 1e-3 / momentum 0.03."""

    def __init__(self, cfg, ch=3, nc=None):
        super().__init__()
        if isinstance(cfg, dict):
            self.yaml = dict(cfg)
        elif "\n" in cfg:
            self.yaml = yaml.safe_load(cfg)
        else:
            with open(cfg, encoding="utf-8") as f:
                self.yaml = yaml.safe_load(f)
        if nc:
            self.yaml["nc"] = nc
        self.model, self.save = parse_model(self.yaml, ch)
        head = self.model[-1]
        if isinstance(head, DETECT_HEADS):
            s = 256
            with torch.no_grad():
                self.train()
                maps = self.forward(torch.zeros(1, ch, s, s))
            if head.n_heads > 1:
                maps = maps[0]
            head.stride = torch.tensor([s / m.shape[-2] for m in maps])
            head.bias_init()
        self.stride = getattr(head, "stride", None)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = BN_EPS, BN_MOMENTUM

    @property
    def head(self):
        return self.model[-1]

    def forward(self, x, keep=None):
        """Runs every layer. With `keep` (a list), every layer's output is appended to it."""
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            if keep is not None:
                keep.append(x)
            y.append(x if m.i in self.save else None)
        return x

    def fuse(self):
        """Fold every BN into its conv and merge RepConvN branches (the official BaseModel.fuse())."""
        for m in list(self.modules()):
            if isinstance(m, (Conv, RepConvN, ShuffleNetV2)):
                m.fuse()
        return self

    def num_params(self):
        return sum(p.numel() for p in self.parameters())


# ---- safetensors (8-byte header length, JSON header, raw little-endian data) ------------------------------------

_NP_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U8": "u1", "BOOL": "u1"}


def load_safetensors(path):
    """({name: torch.Tensor}, metadata dict). BF16 is not supported (no numpy dtype)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: {len(data)} bytes, not a safetensors file")
    n = struct.unpack("<Q", data[:8])[0]
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(data)}")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in _NP_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        b, e = info["data_offsets"]
        if not 0 <= b <= e <= len(data) - 8 - n:
            raise ValueError(f"{path}: tensor {name} has data_offsets {b}..{e} outside the data")
        arr = np.frombuffer(data, dtype=_NP_DTYPES[info["dtype"]], count=(e - b) // np.dtype(
            _NP_DTYPES[info["dtype"]]).itemsize, offset=8 + n + b)
        tensors[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return tensors, meta


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} with the project's writer (tools/pt2safetensors.py)."""
    import importlib.util
    import os
    spec = importlib.util.spec_from_file_location(
        "pt2safetensors", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                       "pt2safetensors.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write_safetensors(path, {k: v.detach().contiguous() for k, v in tensors.items()}, metadata or {})


def load_weights(model, path_or_tensors, strict=True):
    """Loads parameters and BN buffers by official name. With strict, every model tensor must be present
    and every file tensor must belong to the model (BN num_batches_tracked counters are not stored)."""
    tensors = path_or_tensors if isinstance(path_or_tensors, dict) else load_safetensors(path_or_tensors)[0]
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if strict and (missing or unexpected):
        raise KeyError(f"weights do not match the model: missing {missing[:5]} ({len(missing)}), "
                       f"unexpected {unexpected[:5]} ({len(unexpected)})")
    with torch.no_grad():
        for k, v in own.items():
            if k in tensors:
                if tuple(tensors[k].shape) != tuple(v.shape):
                    raise ValueError(f"{k}: file shape {list(tensors[k].shape)}, model shape {list(v.shape)}")
                v.copy_(tensors[k].to(v.dtype))
    return model


def state_tensors(model):
    """The model's parameters and BN buffers under their official names (no num_batches_tracked)."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
