"""Layer latency curves for pruning: ops re-shaped to other channel counts, the grid, the
interpolation, and the channel tile read from a probe series."""

from __future__ import annotations

import pytest

from edge_pipeline.convert.inspect import read_graph
from edge_pipeline.profiling.layer_latency import Curve, _grid, channels_of, resized, tile_of
from edge_pipeline.profiling.opmodels import generate
from edge_pipeline.profiling.opsig import signatures


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_layer_ops_resize_to_valid_runnable_ops(tiny_models, precision):
    from tests.profiling.test_latency_table import run_model

    layers = [s for s in signatures(read_graph(tiny_models[precision])) if s.op in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(layers) == 3
    for sig in layers:
        cin, cout = channels_of(sig)
        assert resized(sig, cin, cout) == sig  # the identity at the layer's own widths
        smaller = resized(sig, max(1, cin - 1), cout - 2)
        assert channels_of(smaller) == (max(1, cin - 1), cout - 2)
        weights = smaller.inputs[1].shape
        assert weights[0] == cout - 2 and weights[-1] == max(1, cin - 1)
        assert smaller.inputs[2].shape == (cout - 2,)  # the bias follows the outputs
        assert smaller.options == sig.options
        [out] = run_model(generate(smaller))
        assert out.shape[-1] == cout - 2


def test_a_pad_keeps_its_input_channels_on_both_sides():
    from edge_pipeline.profiling.opsig import OpSig, TensorSig

    pad = OpSig("PAD", (TensorSig((1, 8, 8, 16), "int8", False, "pt"), TensorSig((4, 2), "int32", True, "", (0,) * 8)),
                (TensorSig((1, 9, 9, 16), "int8", False, "pt"),), (), "PadOptions")
    assert channels_of(resized(pad, 8, 8)) == (8, 8)


def test_the_grid_holds_tile_multiples_down_to_the_floor_and_the_full_width():
    assert _grid(64, 7, 16) == [16, 32, 48, 64]
    assert _grid(20, 2, 8) == [8, 16, 20]  # the full width even when it is not a multiple
    grid = _grid(320, 32, 8)
    assert grid[-1] == 320 and len(grid) <= 7 and all(g % 8 == 0 for g in grid) and grid[0] >= 32


def test_a_curve_charges_whole_tiles_and_combines_the_two_axes():
    curve = Curve(cin=32, cout=32, depthwise=False, out_grid=[16, 32], out_ms=[1.0, 2.0], in_grid=[16, 32],
                  in_ms=[1.5, 2.0], multiple=16)
    assert curve(32, 32) == pytest.approx(2.0)
    assert curve(32, 17) == curve(32, 32)  # 17 channels cost a whole second tile
    assert curve(32, 16) == pytest.approx(1.0)
    assert curve(16, 16) == pytest.approx(1.0 * 1.5 / 2.0)
    depthwise = Curve(32, 32, True, [16, 32], [0.5, 1.0], [16, 32], [0.5, 1.0], 1)
    assert depthwise(24, 24) == pytest.approx(0.75)  # interpolated, one axis


def test_the_tile_is_the_step_the_times_follow():
    widths = range(33, 65)
    assert tile_of({k: 1.0 + 0.3 * ((k - 1) // 16) for k in widths}) == 16
    assert tile_of({k: 1.0 + 0.15 * ((k - 1) // 8) for k in widths}) == 8
    assert tile_of({k: 1.0 + 0.01 * k for k in widths}) == 1  # smooth: no tile
    assert tile_of(dict.fromkeys(widths, 1.0)) == 1  # flat: nothing to learn
    noisy = {k: (1.0 + 0.3 * ((k - 1) // 16)) * (1.2 if k in (40, 57) else 1.0) for k in widths}
    assert tile_of(noisy) == 16  # two outliers do not hide the step
