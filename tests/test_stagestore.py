"""The shared stage store: publish, copy, damage detection, per-key locking across processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import pytest

from edge_pipeline.artifacts import sha256_file
from edge_pipeline.errors import UserError
from edge_pipeline.rundir import STAGE_RECORD
from edge_pipeline.stagestore import StageStore

KEY = "ab" * 32


def stage_folder(root, key=KEY, files=None):
    """A finished stage folder as the pipeline writes one: outputs + stage.json with their sha256."""
    files = files or {"model.safetensors": b"weights", "sub/details.json": b"{}"}
    root.mkdir(parents=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    outputs = {rel: sha256_file(root / rel) for rel in files}
    (root / STAGE_RECORD).write_text(json.dumps({"key": key, "outputs": outputs, "entry": {}}))
    return root


def test_published_stage_is_copied_into_a_run(tmp_path):
    store = StageStore(tmp_path / "store").claim()
    assert store.valid_record(KEY) is None
    store.publish(KEY, stage_folder(tmp_path / "run" / "01-train"))
    dest = tmp_path / "other" / ".01-train.tmp"
    dest.mkdir(parents=True)
    record = store.copy_into(KEY, dest)
    assert record is not None and record["key"] == KEY
    assert (dest / "model.safetensors").read_bytes() == b"weights" and (dest / "sub" / "details.json").is_file()
    assert (dest / STAGE_RECORD).is_file()
    # Copies, not links: editing the run's file leaves the store intact.
    (dest / "model.safetensors").write_bytes(b"edited")
    assert store.valid_record(KEY) is not None


def test_a_damaged_object_is_set_aside_not_used_and_not_deleted(tmp_path):
    store = StageStore(tmp_path / "store").claim()
    store.publish(KEY, stage_folder(tmp_path / "run" / "01-train"))
    (store.object_dir(KEY) / "model.safetensors").write_bytes(b"truncat")
    assert store.valid_record(KEY) is None
    aside = [p for p in (tmp_path / "store" / "objects").iterdir() if p.name.startswith(f"{KEY}.damaged-")]
    assert len(aside) == 1 and (aside[0] / "model.safetensors").read_bytes() == b"truncat"
    store.publish(KEY, stage_folder(tmp_path / "run2" / "01-train"))  # recomputed, published again
    assert store.valid_record(KEY) is not None


def test_a_record_for_another_key_is_not_valid(tmp_path):
    store = StageStore(tmp_path / "store").claim()
    other = "cd" * 32
    store.publish(other, stage_folder(tmp_path / "run" / "01-train", key=KEY))  # stage.json names KEY, not `other`
    assert store.valid_record(other) is None


@pytest.mark.parametrize("key", ["../../etc", "AB" * 32, "ab" * 31, "ab" * 32 + "/x"])
def test_keys_never_become_arbitrary_paths(tmp_path, key):
    with pytest.raises(ValueError, match="not a cache key"):
        StageStore(tmp_path).object_dir(key)


def test_a_foreign_folder_is_not_made_a_store(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("mine")
    with pytest.raises(UserError, match="not an edge-pipeline store"):
        StageStore(tmp_path / "docs").claim()
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "mine"
    StageStore(tmp_path / "new").claim()
    StageStore(tmp_path / "new").claim()  # ours: claimed again without complaint


HOLD = """
import sys
from edge_pipeline.stagestore import StageStore
with StageStore(sys.argv[1]).lock(sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_the_key_lock_makes_a_second_process_wait(tmp_path):
    store = StageStore(tmp_path / "store").claim()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store.root), KEY], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        got = threading.Event()

        def take():
            with store.lock(KEY):
                got.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not got.wait(0.5)  # the other process holds it
        with store.lock("cd" * 32):  # another key is free
            pass
        holder.stdin.close()
        assert got.wait(30)
        waiter.join(30)
    finally:
        holder.kill()
        holder.wait()


def test_install_replaces_the_runs_folder_through_its_rule_and_leaves_nothing_behind(tmp_path):
    store = StageStore(tmp_path / "store").claim()
    store.publish(KEY, stage_folder(tmp_path / "a" / "01-train"))
    final = stage_folder(tmp_path / "run" / "01-train", key="cd" * 32, files={"old.bin": b"old"})
    cleared = []

    def clear(folder):
        cleared.append(folder)
        shutil.rmtree(folder)

    tmp = tmp_path / "run" / ".01-train.tmp"
    tmp.mkdir()
    record = store.install(KEY, tmp, final, clear)
    assert record["key"] == KEY and cleared == [final]
    assert (final / "model.safetensors").read_bytes() == b"weights" and not (final / "old.bin").exists()
    assert not tmp.exists()
    tmp.mkdir()
    assert store.install("ef" * 32, tmp, tmp_path / "run" / "02-x", clear) is None  # nothing stored: nothing done
    assert not tmp.exists() and not (tmp_path / "run" / "02-x").exists()
