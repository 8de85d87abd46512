"""The aarch64 emulator end to end: the ARM build of ai-edge-litert under qemu-aarch64-static runs
the int8 model and gives this host's outputs on real inputs. Needs `make emulator` (the test suite's
`make test` builds it once; a missing sysroot is built here, with network)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge_pipeline.profiling.devices import get_device, load_device_file
from edge_pipeline.profiling.runner import EMULATED_NOTE, profile_model
from edge_pipeline.profiling.transports import make_transport
from tests.profiling.conftest import device_file

pytestmark = pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None, reason="qemu-user-static not installed (make system-deps)")

QEMU_FAST = """\
arch: aarch64
transport: {kind: qemu}
runtime: {name: ai-edge-litert, version: 2.1.0}
budget: {warmup_runs: 1, min_runs: 5, min_seconds: 0.05, max_seconds: 10.0, max_rel_std: 10.0}
"""


@pytest.mark.slow  # ~25 s: three emulated Python starts (timing, memory, outputs) of ~7 s each
def test_int8_model_runs_on_emulated_aarch64_with_host_outputs(tiny_models, tmp_path):
    device = load_device_file(device_file(tmp_path, "qemu-fast", QEMU_FAST))
    profile = profile_model(tiny_models["int8"], device, samples=np.load(tiny_models["samples"]))
    assert profile["arch"] == "aarch64" and profile["python"].startswith("3.11")
    assert profile["runtime"] == {"name": "ai-edge-litert", "version": "2.1.0"}
    assert profile["emulated"] is True and profile["notes"][0] == EMULATED_NOTE
    assert profile["cpu"].startswith("emulated aarch64")
    assert profile["latency_ms"]["runs"] >= 5 and profile["peak_rss_mb"] > 10
    check = profile["outputs_check"]
    assert check["samples"] == 8 and check["match"] and check["top1_agreement"] == 1.0


def test_catalog_emulator_is_set_up_and_reachable():
    assert make_transport(get_device("qemu-aarch64")).check() is None
