"""Hostile model and weights files: `model.weights` (.pth / .safetensors) and a teacher folder
(`structure.json` + `model.safetensors`). No pickle runs, every bad file is one `error:` line
naming it, exit 2; weights that fit nothing or hold NaN/Inf are refused, not loaded with a warning."""

from __future__ import annotations

import json
import shutil
import struct

from .builders import pickle_payload, safetensors_bytes, symlink, tiny_recipe, torch_bytes, torch_payload
from .harness import Case, Sandbox

RUNS = ("runs",)


def _shared_state(sandbox: Sandbox) -> dict:
    """The tiny model's real state dict (keys and shapes the recipe's model expects)."""
    from safetensors.torch import load_file

    return load_file(str(sandbox.shared.tiny_run() / "01-train" / "model.safetensors"))


def _weights_run(filename: str, content):
    """Write the weights file (bytes, or a function of the sandbox), then run a recipe that loads it."""

    def setup(sandbox: Sandbox) -> list[str]:
        data = content(sandbox) if callable(content) else content
        if data is not None:
            sandbox.write(filename, data)
        model = "{arch: vgg_small, width: 0.5, weights: " + filename + "}"
        sandbox.write("tiny.yaml", tiny_recipe(model=model))
        return ["run", "tiny.yaml"]

    return setup


def _bad_weights(id: str, filename: str, content, **kw) -> Case:
    return Case(id, "models", _weights_run(filename, content), 2, outputs=RUNS, error_has=(filename,),
                timeout_s=kw.pop("timeout_s", 120), **kw)


def _with_nan(sandbox: Sandbox) -> bytes:
    state = _shared_state(sandbox)
    first = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[first] = state[first].clone()
    state[first].view(-1)[0] = float("nan")
    return safetensors_bytes(state)


def _with_inf(sandbox: Sandbox) -> bytes:
    state = {k: v.clone() for k, v in _shared_state(sandbox).items()}
    last = [k for k, v in state.items() if v.is_floating_point()][-1]
    state[last].fill_(float("inf"))
    return torch_bytes(state)


def _wrong_shapes(sandbox: Sandbox) -> bytes:
    import torch

    return torch_bytes({k: torch.zeros(v.numel() + 1) if v.is_floating_point() else v for k, v in _shared_state(sandbox).items()})


def _no_key_matches(sandbox: Sandbox) -> bytes:
    import torch

    return torch_bytes({"backbone.layer9.weight": torch.zeros(3, 3), "head.bias": torch.zeros(3)})


def _not_tensors(sandbox: Sandbox) -> bytes:
    return torch_bytes({k: [1.0, 2.0] if i == 0 else "weights" for i, k in enumerate(_shared_state(sandbox))})


def _truncated_safetensors(sandbox: Sandbox) -> bytes:
    data = (sandbox.shared.tiny_run() / "01-train" / "model.safetensors").read_bytes()
    return data[: len(data) // 2]


def _huge_header(sandbox: Sandbox) -> bytes:
    """A safetensors file whose 8-byte header length claims 2**60 bytes."""
    return struct.pack("<Q", 2**60) + b'{"__metadata__": {}}' + b"\0" * 64


def _dev_zero(sandbox: Sandbox) -> None:
    symlink(sandbox.work / "w.safetensors", "/dev/zero")


# ---- teacher folders: another run's saved model, tampered ----


def _teacher_run(tamper):
    """Copy the shared run's 01-train as `teacher/`, apply `tamper(folder)`, distill from it."""

    def setup(sandbox: Sandbox) -> list[str]:
        teacher = sandbox.work / "teacher"
        shutil.copytree(sandbox.shared.tiny_run() / "01-train", teacher)
        tamper(teacher, sandbox)
        stages = "  - train: {epochs: 0}\n  - finetune: {epochs: 1, distill: {teacher: teacher}}\n"
        sandbox.write("tiny.yaml", tiny_recipe(stages))
        return ["run", "tiny.yaml"]

    return setup


def _edit_structure(change):
    def tamper(folder, sandbox: Sandbox) -> None:
        path = folder / "structure.json"
        data = json.loads(path.read_text())
        change(data, sandbox)
        path.write_text(json.dumps(data))

    return tamper


def _write_structure(text: str):
    def tamper(folder, sandbox: Sandbox) -> None:
        (folder / "structure.json").write_text(text)

    return tamper


def _set(path: tuple, value):
    def change(data, sandbox: Sandbox) -> None:
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value(sandbox) if callable(value) else value

    return change


def _bad_teacher(id: str, tamper, *, error_has: tuple[str, ...] = ("structure.json",), **kw) -> Case:
    return Case(id, "models", _teacher_run(tamper), 2, outputs=RUNS, error_has=error_has,
                timeout_s=kw.pop("timeout_s", 150), **kw)


def _foreign_weights(folder, sandbox: Sandbox) -> None:
    import torch

    (folder / "model.safetensors").write_bytes(safetensors_bytes({"x": torch.zeros(4)}))


CASES = [
    # Pickles never run: torch.load(weights_only=True) refuses them, with one line naming the file.
    _bad_weights("weights-pickle-payload-torch-zip", "evil.pth", torch_payload),
    _bad_weights("weights-pickle-payload-raw-pickle", "evil.pth", pickle_payload),
    _bad_weights("weights-pickle-payload-as-safetensors", "evil.safetensors", pickle_payload),
    # Issue 11.8/11.10: files that load but are not usable weights.
    _bad_weights("weights-values-not-tensors", "w.pth", _not_tensors),
    _bad_weights("weights-no-key-matches", "w.pth", _no_key_matches),
    _bad_weights("weights-wrong-shapes", "w.pth", _wrong_shapes),
    _bad_weights("weights-nan", "w.safetensors", _with_nan),
    _bad_weights("weights-inf", "w.pth", _with_inf),
    # Corrupt and unbounded files (issue 11.4): refused from their size, never read whole.
    _bad_weights("weights-truncated-safetensors", "w.safetensors", _truncated_safetensors),
    _bad_weights("weights-safetensors-huge-header", "w.safetensors", _huge_header),
    _bad_weights("weights-symlink-to-dev-zero", "w.safetensors", _dev_zero, timeout_s=90),
    # Issue 11.8: a tampered structure.json of a teacher folder is bad input, never a traceback.
    _bad_teacher("teacher-structure-not-json", _write_structure('{"format": 1, "base": ')),
    _bad_teacher("teacher-structure-deep-json", _write_structure("[" * 100_000 + "]" * 100_000)),
    _bad_teacher("teacher-structure-unknown-arch", _edit_structure(_set(("base", "arch"), "os.system"))),
    _bad_teacher("teacher-structure-bad-share-path", _edit_structure(_set(("edits",), [
        {"transform": "share", "config": {}, "ops": [{"op": "share", "path": "features.0", "source": "no.such.module"}]}]))),
    _bad_teacher("teacher-structure-unknown-module", _edit_structure(_set(("edits",), [
        {"transform": "x", "config": {}, "ops": [{"op": "replace", "path": "features.0", "module": {"type": "os.system"}}]}]))),
    _bad_teacher("teacher-structure-dunder-path", _edit_structure(_set(("edits",), [
        {"transform": "x", "config": {}, "ops": [{"op": "share", "path": "__class__", "source": "features"}]}]))),
    _bad_teacher("teacher-structure-huge-layer", _edit_structure(_set(("base", "num_classes"), 10**12))),
    _bad_teacher("teacher-structure-negative-width", _edit_structure(_set(("base", "width"), -1.0))),
    _bad_teacher("teacher-weights-from-another-model", _foreign_weights, error_has=("model.safetensors",)),
]
