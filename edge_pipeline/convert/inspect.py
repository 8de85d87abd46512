"""Read a .tflite flatbuffer without a runtime: ops (+versions), tensors, quantization, sizes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UserError


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - tensorflow ships the same generated module
        from tensorflow.lite.python import schema_py_generated as schema  # type: ignore[no-redef]
    return schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def inspect_tflite(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise UserError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier); the file is corrupt or another format")
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # a truncated flatbuffer fails in many ways
        raise UserError(f"{path}: corrupt TFLite flatbuffer ({type(exc).__name__}); re-export the model") from None
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    codes = []
    for code in model.operatorCodes or []:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            name = custom
        codes.append({"name": name, "version": code.version})
    subgraph = model.subgraphs[0]
    counts = Counter(codes[op.opcodeIndex]["name"] for op in subgraph.operators or [])
    versions: dict[str, int] = {}
    for c in codes:
        versions[c["name"]] = max(versions.get(c["name"], 0), c["version"])
    buffers = model.buffers or []

    def tensor_info(index: int) -> dict[str, Any]:
        t = subgraph.tensors[index]
        q = t.quantization
        scales = list(q.scale) if q is not None and q.scale is not None else []
        zeros = list(q.zeroPoint) if q is not None and q.zeroPoint is not None else []
        data = buffers[t.buffer].data if t.buffer < len(buffers) and buffers[t.buffer].data is not None else None
        info = {
            "index": index, "name": t.name.decode() if isinstance(t.name, bytes) else str(t.name),
            "shape": [int(s) for s in (t.shape if t.shape is not None else [])],
            "dtype": type_names.get(t.type, str(t.type)).lower(), "bytes": int(len(data)) if data is not None else 0,
        }
        if scales:
            info["quantization"] = {
                "scales": len(scales), "scale": float(scales[0]) if len(scales) == 1 else [float(min(scales)), float(max(scales))],
                "zero_point": int(zeros[0]) if len(zeros) == 1 else "per-channel",
                "axis": int(q.quantizedDimension),
            }
        return info

    tensors = [tensor_info(i) for i in range(len(subgraph.tensors or []))]
    flex = sorted(name for name in counts if name.startswith("Flex"))
    return {
        "file": str(path), "size_bytes": len(buf),
        "inputs": [tensors[i] for i in subgraph.inputs], "outputs": [tensors[i] for i in subgraph.outputs],
        "ops": dict(sorted(counts.items())), "op_versions": dict(sorted(versions.items())),
        "op_count": int(sum(counts.values())), "transposes": int(counts.get("TRANSPOSE", 0)),
        "flex_ops": flex, "custom_ops": sorted(n for n in counts if n not in op_names.values() and not n.startswith("Flex")),
        "tensors": tensors, "weight_bytes": int(sum(t["bytes"] for t in tensors)),
        "subgraphs": len(model.subgraphs),
    }
