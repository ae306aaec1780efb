#!/usr/bin/python3
"""Checks ONNX models with onnx.checker.check_model (Debian's python3-onnx) and prints a summary.

    /usr/bin/python3 tools/onnx_check.py MODEL.onnx [MODEL2.onnx ...]

For each file: the full check (structure, every node against its opset schema, then strict shape
inference, which also proves the declared input and output shapes consistent with the graph), then one line:
    ok MODEL.onnx: ir 8, opset 17, 705 nodes, 303 initializers, input [batch,3,height,width], output pred [batch,84,anchors]
followed by the metadata_props. Exit status 0 when every file passes, 1 otherwise (the checker's message on stderr).
"""
import sys

import onnx


def dims(value_info):
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return "(shape not declared)"
    return "[" + ",".join(d.dim_param or str(d.dim_value) for d in t.shape.dim) + "]"


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
    return True


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) > 1 else 2
    ok = [check(p) for p in sys.argv[1:]]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
