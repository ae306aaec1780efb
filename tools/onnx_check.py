#!/usr/bin/python3
"""Checks ONNX models with onnx.checker.check_model (Debian's python3-onnx) and prints a summary.

    /usr/bin/python3 tools/onnx_check.py MODEL.onnx [MODEL2.onnx ...]

For each file: the full check (structure, every node against its opset schema, then strict shape
inference, which also proves the declared input and output shapes consistent with the graph), then one line:
    ok MODEL.onnx: ir 8, opset 17, 705 nodes, 303 initializers, input [batch,3,height,width], output pred [batch,84,anchors]
followed by the metadata_props. A model with QuantizeLinear/DequantizeLinear nodes (an int8 model, QDQ form)
also gets its quantized convs checked against the form `gelan export` writes (docs/ONNX.md) and one more line:
    qdq: 185 int8 Conv of 185 (input: uint8 per tensor, 168 QuantizeLinear; weight: int8 per channel, axis 0)
Exit status 0 when every file passes, 1 otherwise (the checker's message on stderr).
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def dims(value_info):
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return "(shape not declared)"
    return "[" + ",".join(d.dim_param or str(d.dim_value) for d in t.shape.dim) + "]"


def qdq_problems(g):
    """The quantized convs of g, and what deviates from the QDQ form of a gelan qconv:
    Conv(DequantizeLinear(QuantizeLinear(x, s, zp), s, zp), DequantizeLinear(w_q, ws, axis=0), fp32 bias)
    with s a float scalar, zp a uint8 scalar (the same initializers in the pair), w_q an int8
    initializer in [-127, 127] (symmetric, the runtime's range) and ws a float [cout]."""
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    arr = lambda name: numpy_helper.to_array(inits[name]) if name in inits else None
    convs, quantized, problems = 0, 0, []
    for c in g.node:
        if c.op_type != "Conv":
            continue
        convs += 1
        x, w = producer.get(c.input[0]), producer.get(c.input[1])
        if not (x and x.op_type == "DequantizeLinear") and not (w and w.op_type == "DequantizeLinear"):
            continue  # a float conv
        quantized += 1
        bad = lambda why: problems.append(f"Conv {c.name}: {why}")
        q = producer.get(x.input[0]) if x and x.op_type == "DequantizeLinear" else None
        if not q or q.op_type != "QuantizeLinear":
            bad("input is not DequantizeLinear(QuantizeLinear(...))")
        else:
            s, zp = arr(x.input[1]), arr(x.input[2]) if len(x.input) > 2 else None
            if list(q.input[1:]) != list(x.input[1:]):
                bad("QuantizeLinear and DequantizeLinear of the input use different scale/zero point")
            if s is None or s.shape != () or s.dtype != np.float32 or not s > 0:
                bad("input scale is not a positive float scalar initializer")
            if zp is None or zp.shape != () or zp.dtype != np.uint8:
                bad("input zero point is not a uint8 scalar initializer")
        if not w or w.op_type != "DequantizeLinear":
            bad("weight is not DequantizeLinear of an initializer")
            continue
        wq, ws = arr(w.input[0]), arr(w.input[1])
        axis = next((a.i for a in w.attribute if a.name == "axis"), 1)
        if wq is None or wq.dtype != np.int8 or wq.ndim != 4 or wq.min(initial=0) < -127:
            bad("weight codes are not an int8 [cout, cin/g, k, k] initializer in [-127, 127]")
        elif ws is None or ws.dtype != np.float32 or ws.shape != (wq.shape[0],) or axis != 0:
            bad("weight scales are not float [cout] on axis 0 (per output channel)")
        if len(c.input) > 2 and c.input[2] and (arr(c.input[2]) is None or arr(c.input[2]).dtype != np.float32):
            bad("bias is not a float initializer")
    nquant = sum(n.op_type == "QuantizeLinear" for n in g.node)
    return convs, quantized, nquant, problems


def check(path):
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:  # the checker raises ValidationError, shape inference InferenceError
        print(f"FAIL {path}: {type(e).__name__}: {e}", file=sys.stderr)
        return False
    m = onnx.load(path)
    opsets = ", ".join(f"opset {o.version}" if not o.domain else f"{o.domain} {o.version}" for o in m.opset_import)
    g = m.graph
    ins = ", ".join(f"{i.name} {dims(i)}" for i in g.input)
    outs = ", ".join(f"{o.name} {dims(o)}" for o in g.output)
    print(f"ok {path}: ir {m.ir_version}, {opsets}, {len(g.node)} nodes, {len(g.initializer)} initializers, "
          f"input {ins}, output {outs}")
    for p in m.metadata_props:
        v = p.value if len(p.value) <= 100 else p.value[:97] + "..."
        print(f"  {p.key} = {v}")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node):
        convs, quantized, nquant, problems = qdq_problems(g)
        for p in problems:
            print(f"FAIL {path}: {p}", file=sys.stderr)
        if problems:
            return False
        print(f"  qdq: {quantized} int8 Conv of {convs} (input: uint8 per tensor, {nquant} QuantizeLinear; "
              f"weight: int8 per channel, axis 0)")
    return True


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) > 1 else 2
    ok = [check(p) for p in sys.argv[1:]]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
