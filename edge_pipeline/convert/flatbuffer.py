"""The .tflite flatbuffer as data: read it into the generated object API, rewrite it, pack it again.

No TFLite runtime is needed, only the schema module that ai-edge-litert (or tensorflow) ships.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UserError

FILE_IDENTIFIER = b"TFL3"


def schema():
    try:
        from ai_edge_litert import schema_py_generated as module
    except ImportError:  # pragma: no cover - tensorflow ships the same generated module
        from tensorflow.lite.python import schema_py_generated as module  # type: ignore[no-redef]
    return module


def enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def read_model(source: str | Path | bytes, label: str | None = None) -> Any:
    """The ModelT of a .tflite file or buffer; a missing, foreign or truncated file is a UserError."""
    if isinstance(source, (bytes, bytearray)):
        buf, label = bytes(source), label or "<buffer>"
    else:
        path = Path(source)
        label = label or str(path)
        try:
            buf = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{label}: cannot read ({exc.strerror})") from None
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise UserError(f"{label}: not a TFLite model (no TFL3 flatbuffer identifier); the file is corrupt or another format")
    try:
        model = schema().ModelT.InitFromPackedBuf(buf, 0)
        if not model.subgraphs:
            raise ValueError("no subgraphs")
    except Exception as exc:  # a truncated flatbuffer fails in many ways
        raise UserError(f"{label}: corrupt TFLite flatbuffer ({type(exc).__name__}); re-export the model") from None
    return model


def write_model(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _is_constant(model: Any, tensor: Any) -> bool:
    buffers = model.buffers or []
    return 0 < tensor.buffer < len(buffers) and buffers[tensor.buffer].data is not None and len(buffers[tensor.buffer].data) > 0


def unshare_constants(buf: bytes) -> tuple[bytes, int]:
    """Give every op its own copy of constant tensors that several ops read.

    TensorFlow merges identical constants, e.g. the all-zero biases of a freshly initialized
    network. Integer quantizers give a bias the scale input_scale * weight_scale of its op, so a
    bias shared by two ops gets one op's scale, and the other op fails to prepare
    ("no_integer_overflow_from_quantization") in the int16x8 quantizer. Copies cost a few bytes.
    Returns (new buffer, number of copies made).
    """
    model = read_model(buf)
    copies = 0
    for subgraph in model.subgraphs:
        uses = Counter(i for op in subgraph.operators or [] for i in (op.inputs if op.inputs is not None else []) if i >= 0)
        seen: set[int] = set()
        for op in subgraph.operators or []:
            inputs = list(op.inputs if op.inputs is not None else [])
            for position, index in enumerate(inputs):
                if index < 0 or uses[index] < 2 or not _is_constant(model, subgraph.tensors[index]):
                    continue
                if index not in seen:  # the first reader keeps the original
                    seen.add(index)
                    continue
                tensor = copy.deepcopy(subgraph.tensors[index])
                data = copy.deepcopy(model.buffers[tensor.buffer])
                model.buffers.append(data)
                tensor.buffer = len(model.buffers) - 1
                name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
                tensor.name = f"{name}_copy{copies}".encode()
                subgraph.tensors.append(tensor)
                inputs[position] = len(subgraph.tensors) - 1
                copies += 1
            op.inputs = inputs
    if not copies:
        return buf, 0
    return write_model(model), copies
