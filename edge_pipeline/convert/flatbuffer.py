"""The .tflite flatbuffer as data: read it into the generated object API, rewrite it, pack it again.

No TFLite runtime is needed, only the schema module that ai-edge-litert (or tensorflow) ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import LIMIT_TFLITE, read_bytes_bounded
from ..errors import UserError
from .tflite_check import check_model_structure

FILE_IDENTIFIER = b"TFL3"


def schema():
    try:
        from ai_edge_litert import schema_py_generated as module
    except ImportError:  # pragma: no cover - tensorflow ships the same generated module
        from tensorflow.lite.python import schema_py_generated as module
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
        buf = read_bytes_bounded(path, LIMIT_TFLITE, "TFLite model")
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise UserError(f"{label}: not a TFLite model (no TFL3 flatbuffer identifier); the file is corrupt or another format")
    try:
        model = schema().ModelT.InitFromPackedBuf(buf, 0)
        if not model.subgraphs:
            raise ValueError("no subgraphs")
    except Exception as exc:  # a truncated flatbuffer or a bad offset fails in many ways
        reason = (str(exc).splitlines() or [""])[0][:120] or type(exc).__name__
        raise UserError(f"{label}: not a valid TFLite file (corrupt TFLite flatbuffer: {reason}); "
                        "re-export the model") from None
    check_model_structure(model, len(buf), label, enum_names(schema().TensorType))  # every index in range
    return model


def write_model(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())
