"""Grid axes, their combinations, and variants of a raw recipe."""

from __future__ import annotations

import pytest

from edge_pipeline.errors import UserError
from edge_pipeline.report.sweep_report import settings_text
from edge_pipeline.sweep.grid import DROP, KEEP, Axis, apply_settings, combinations, make_axis, parse_axis

RAW = {
    "name": "r", "data": {"dataset": "digits"}, "model": {"arch": "vgg_small"},
    "stages": [{"train": {"epochs": 2}}, {"restructure": {"depthwise_separable": {}}},
               {"prune": {"name": "cut", "ratio": 0.5}}, {"export": None}],
}


def test_axis_is_parsed_from_a_yaml_flow_list():
    axis = parse_axis("stages.prune.ratio=[0.3, 0.5, 0.7]")
    assert axis == Axis("stages.prune.ratio", (0.3, 0.5, 0.7))
    assert not axis.is_stage
    assert parse_axis("stages.restructure=[keep, drop]").is_stage


@pytest.mark.parametrize("text,message", [
    ("stages.prune.ratio", "expected PATH=\\[v1, v2, ...\\]"),
    ("=[1,2]", "expected PATH="),
    ("stages.prune.ratio=0.3", "must be a non-empty list"),
    ("stages.prune.ratio=[]", "must be a non-empty list"),
    ("stages.prune.ratio=[0.3, 0.3]", "appears twice"),
    ("stages..ratio=[1, 2]", "not a dotted path"),
    ("stages.restructure=[on, 3]", "whole-stage axis takes 'keep', 'drop' or a mapping"),
    ("stages.prune.ratio=[0.3", "--grid stages.prune.ratio=\\[0.3"),  # YAML error names the option
])
def test_bad_axes_are_one_line_user_errors(text, message):
    with pytest.raises(UserError, match=message) as info:
        parse_axis(text)
    assert "\n" not in str(info.value)


def test_too_many_values_are_refused():
    with pytest.raises(UserError, match="at most 64"):
        make_axis("seed", list(range(65)), "--grid seed")


def test_product_and_zip():
    a, b = Axis("x", (1, 2)), Axis("y", ("p", "q", "r"))
    product = combinations([a, b])
    assert len(product) == 6 and product[0] == {"x": 1, "y": "p"} and product[-1] == {"x": 2, "y": "r"}
    assert combinations([a, Axis("y", ("p", "q"))], zipped=True) == [{"x": 1, "y": "p"}, {"x": 2, "y": "q"}]
    with pytest.raises(UserError, match="same number of values"):
        combinations([a, b], zipped=True)
    with pytest.raises(UserError, match="no grid"):
        combinations([])
    with pytest.raises(UserError, match="given twice"):
        combinations([a, a])
    with pytest.raises(UserError, match="at most 512"):
        combinations([Axis(f"p{i}", (1, 2)) for i in range(10)])


def test_settings_set_values_by_stage_name_or_type():
    out = apply_settings(RAW, {"stages.cut.ratio": 0.3, "stages.train.epochs": 5, "data.image_size": 16})
    assert out["stages"][2]["prune"] == {"name": "cut", "ratio": 0.3}
    assert out["stages"][0]["train"]["epochs"] == 5 and out["data"]["image_size"] == 16
    assert RAW["stages"][2]["prune"]["ratio"] == 0.5  # the base is never changed


def test_whole_stage_axes_drop_keep_or_replace_a_stage():
    dropped = apply_settings(RAW, {"stages.restructure": DROP, "stages.cut.ratio": 0.7})
    assert [next(iter(s)) for s in dropped["stages"]] == ["train", "prune", "export"]
    assert dropped["stages"][1]["prune"]["ratio"] == 0.7
    assert apply_settings(RAW, {"stages.restructure": KEEP}) == RAW
    replaced = apply_settings(RAW, {"stages.cut": {"method": "random", "ratio": 0.2}})
    assert replaced["stages"][2] == {"prune": {"name": "cut", "method": "random", "ratio": 0.2}}


def test_a_path_that_names_nothing_is_a_user_error():
    with pytest.raises(UserError, match="no item 'quantize'"):
        apply_settings(RAW, {"stages.quantize": DROP})
    with pytest.raises(UserError, match="no item 'quantize'"):
        apply_settings(RAW, {"stages.quantize.mode": "int8"})


def test_settings_text_is_short():
    assert settings_text({"stages.prune.ratio": 0.3, "stages.restructure": "drop"}) == "prune.ratio=0.3, restructure=drop"
