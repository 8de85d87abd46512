"""Hostile TFLite files and inputs for `inspect`, `profile` and `diagnose`: not regular files, truncated,
random, indices out of range inside a real model's flatbuffer, wrong or unbounded `--inputs`. Each is
one `error:` line naming the file, exit 2, quickly and in bounded memory (issue 11.4 and 11.8)."""

from __future__ import annotations

import numpy as np

from .builders import FAST_DEVICE, Payload, edit_tflite, fifo, npy_header_only, symlink
from .harness import Case, Sandbox

BOUNDED_MB = 3072  # far above what a bounded inspect/profile of a tiny model needs, far below /dev/zero


def _real(sandbox: Sandbox, precision: str = "float32") -> bytes:
    return sandbox.shared.tflite()[precision].read_bytes()


def _model(content):
    """`model.tflite` from bytes, a function of the sandbox, or (for links and fifos) a function that makes it."""

    def make(sandbox: Sandbox) -> None:
        data = content(sandbox) if callable(content) else content
        if data is not None:
            sandbox.write("model.tflite", data)

    return make


def _inspect(content):
    def setup(sandbox: Sandbox) -> list[str]:
        _model(content)(sandbox)
        return ["inspect", "model.tflite"]

    return setup


def _profile(content, inputs=None):
    def setup(sandbox: Sandbox) -> list[str]:
        _model(content)(sandbox)
        sandbox.write("fast.yaml", FAST_DEVICE)
        argv = ["profile", "model.tflite", "--device-file", "fast.yaml"]
        if inputs is not None:
            inputs(sandbox)
            argv += ["--inputs", "inputs.npy"]
        return argv

    return setup


def _bad(id: str, setup, *, error_has: tuple[str, ...] = ("model.tflite",), **kw) -> Case:
    return Case(id, "tflite", setup, 2, error_has=error_has, timeout_s=kw.pop("timeout_s", 60), **kw)


def _dev_zero(sandbox: Sandbox) -> None:
    symlink(sandbox.work / "model.tflite", "/dev/zero")


def _fifo(sandbox: Sandbox) -> None:
    fifo(sandbox.work / "model.tflite")


def _truncated(sandbox: Sandbox) -> bytes:
    data = _real(sandbox, "int8")
    return data[: len(data) // 2]


def _random(sandbox: Sandbox) -> bytes:
    return np.random.default_rng(11).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _random_with_identifier(sandbox: Sandbox) -> bytes:
    data = bytearray(_random(sandbox))
    data[4:8] = b"TFL3"
    return bytes(data)


def _opcode_out_of_range(sandbox: Sandbox) -> bytes:
    def edit(model) -> None:
        model.subgraphs[0].operators[0].opcodeIndex = len(model.operatorCodes) + 40

    return edit_tflite(sandbox.shared.tflite()["float32"], edit)


def _tensor_out_of_range(sandbox: Sandbox) -> bytes:
    def edit(model) -> None:
        op = model.subgraphs[0].operators[0]
        op.inputs = [len(model.subgraphs[0].tensors) + 1000, *list(op.inputs)[1:]]

    return edit_tflite(sandbox.shared.tflite()["float32"], edit)


def _buffer_out_of_range(sandbox: Sandbox) -> bytes:
    def edit(model) -> None:
        for tensor in model.subgraphs[0].tensors:
            if tensor.buffer:
                tensor.buffer = len(model.buffers) + 1000
                break

    return edit_tflite(sandbox.shared.tflite()["float32"], edit)


def _negative_shape(sandbox: Sandbox) -> bytes:
    def edit(model) -> None:
        sub = model.subgraphs[0]
        sub.tensors[sub.inputs[0]].shape = [1, -5, 2**31 - 1, 3]

    return edit_tflite(sandbox.shared.tflite()["float32"], edit)


def _real_float(sandbox: Sandbox) -> bytes:
    return _real(sandbox, "float32")


def _inputs(make):
    def write(sandbox: Sandbox) -> None:
        path = sandbox.work / "inputs.npy"
        make(sandbox, path)

    return write


def _wrong_shape(sandbox: Sandbox, path) -> None:
    np.save(path, np.zeros((2, 5, 5, 1), np.float32))  # the model takes (N, 16, 16, 3)


def _object_array(sandbox: Sandbox, path) -> None:
    array = np.empty(1, dtype=object)
    array[0] = Payload(sandbox.inject)
    np.save(path, array, allow_pickle=True)


def _inputs_dev_zero(sandbox: Sandbox, path) -> None:
    symlink(path, "/dev/zero")


def _inputs_huge_header(sandbox: Sandbox, path) -> None:
    path.write_bytes(npy_header_only((1_000_000, 16, 16, 3)))


def _diagnose_random(sandbox: Sandbox) -> list[str]:
    sandbox.write("a.tflite", _random(sandbox))
    sandbox.write("b.tflite", _random_with_identifier(sandbox))
    return ["diagnose", "a.tflite", "b.tflite"]


def _diagnose_opcode(sandbox: Sandbox) -> list[str]:
    sandbox.write("float.tflite", _real(sandbox, "float32"))
    sandbox.write("quant.tflite", _opcode_out_of_range(sandbox))
    return ["diagnose", "float.tflite", "quant.tflite"]


CASES = [
    # Issue 11.4: a symlink to /dev/zero is refused at once (not a regular file), never read.
    _bad("tflite-dev-zero-inspect", _inspect(_dev_zero), timeout_s=20, memory_limit_mb=BOUNDED_MB),
    _bad("tflite-dev-zero-profile", _profile(_dev_zero), timeout_s=20, memory_limit_mb=BOUNDED_MB),
    _bad("tflite-fifo-inspect", _inspect(_fifo), timeout_s=20),
    _bad("tflite-empty-inspect", _inspect(b"")),
    _bad("tflite-truncated-inspect", _inspect(_truncated)),
    _bad("tflite-truncated-profile", _profile(_truncated)),
    _bad("tflite-random-bytes-inspect", _inspect(_random)),
    _bad("tflite-random-with-identifier-inspect", _inspect(_random_with_identifier)),
    _bad("tflite-random-with-identifier-profile", _profile(_random_with_identifier)),
    # Issue 11.8: indices out of range inside a real model's flatbuffer.
    _bad("tflite-opcode-out-of-range-inspect", _inspect(_opcode_out_of_range)),
    _bad("tflite-opcode-out-of-range-profile", _profile(_opcode_out_of_range)),
    _bad("tflite-tensor-index-out-of-range-inspect", _inspect(_tensor_out_of_range)),
    _bad("tflite-tensor-index-out-of-range-profile", _profile(_tensor_out_of_range)),
    _bad("tflite-buffer-index-out-of-range-inspect", _inspect(_buffer_out_of_range)),
    _bad("tflite-negative-input-shape-profile", _profile(_negative_shape)),
    # Issue 11.10 and 11.4: `--inputs` of the wrong shape, a pickle, or unbounded.
    _bad("tflite-inputs-wrong-shape", _profile(_real_float, _inputs(_wrong_shape)), error_has=("inputs.npy",)),
    _bad("tflite-inputs-object-array", _profile(_real_float, _inputs(_object_array)), error_has=("inputs.npy",)),
    _bad("tflite-inputs-dev-zero", _profile(_real_float, _inputs(_inputs_dev_zero)), error_has=("inputs.npy",),
         timeout_s=30, memory_limit_mb=BOUNDED_MB),
    _bad("tflite-inputs-huge-header", _profile(_real_float, _inputs(_inputs_huge_header)), error_has=("inputs.npy",),
         memory_limit_mb=BOUNDED_MB),
    # `diagnose` loads files in a subprocess first; a corrupt one is still one line, exit 2.
    _bad("tflite-diagnose-random-files", _diagnose_random, error_has=(".tflite",)),
    _bad("tflite-diagnose-opcode-out-of-range", _diagnose_opcode, error_has=("quant.tflite",)),
]
