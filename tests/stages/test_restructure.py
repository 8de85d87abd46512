"""The restructure stage: config schema (order, errors), a real pipeline run, its report section."""

from __future__ import annotations

import json

import pytest
import yaml

from edge_pipeline.errors import UserError
from edge_pipeline.recipe import parse_recipe
from edge_pipeline.stages.base import config_dump
from edge_pipeline.stages.restructure import TRANSFORMS, RestructureConfig

HEAD = """\
name: t
seed: 0
data: {dataset: digits, image_size: 16, limit: 300}
model: {arch: vgg_small, num_classes: 10}
stages:
  - train: {epochs: 1, lr: 0.05}
"""


def recipe(restructure: str, extra: str = ""):
    return parse_recipe(HEAD + f"  - restructure: {restructure}\n" + extra, "r.yaml")


def test_transforms_run_in_the_order_written_and_the_order_is_part_of_the_config():
    a = recipe("{low_rank: {rank: 4}, gap_head: {}}").stages[1].config
    b = recipe("{gap_head: {}, low_rank: {rank: 4}}").stages[1].config
    assert [n for n, _ in a.transforms()] == ["low_rank", "gap_head"]
    assert [n for n, _ in b.transforms()] == ["gap_head", "low_rank"]
    assert config_dump(a) != config_dump(b)  # so the cache key changes with the order


def test_resolved_config_round_trips():
    config = recipe("{factorize: {rank: 8}, low_rank: {rank: 4}, share: {}}").stages[1].config
    dumped = config_dump(config)
    assert "decompose" not in dumped  # unused transforms are left out of the resolved recipe
    again = RestructureConfig.model_validate(yaml.safe_load(yaml.safe_dump(dumped)))
    assert config_dump(again) == dumped
    assert again.low_rank.rank == 4 and again.low_rank.energy is None


def test_empty_body_means_defaults():
    config = recipe("{gap_head: , low_rank: {}}").stages[1].config
    assert config.gap_head.init == "fit" and config.low_rank.energy == 0.8


@pytest.mark.parametrize("body, message", [
    ("{lowrank: {}}", "r.yaml:7: stages[1].restructure.lowrank: unknown key 'lowrank' (did you mean 'low_rank'?)"),
    ("{}", "restructure needs at least one transform"),
    ("{low_rank: {rank: 4, energy: 0.5}}", "give `rank` or `energy`, not both"),
    ("{low_rank: {energy: 1.5}}", "stages[1].restructure.low_rank.energy: must be <= 1, got 1.5"),
    ("{depthwise_separable: {expansion: 4}}", "expansion only apply with `inverted_residual: true`"),
    ("{depthwise_separable: {activation: gelu}}",
     "stages[1].restructure.depthwise_separable.activation: must be one of 'none', 'relu', 'relu6' or 'hardswish', got 'gelu'"),
    ("{share: {}, low_rank: {}}", "`share` must be the last transform"),
    ("{grouped_pointwise: {groups: 1}}", "stages[1].restructure.grouped_pointwise.groups: must be >= 2, got 1"),
    ("{gap_head: {init: svd}}", "gap_head.init: must be one of 'fit', 'average' or 'random', got 'svd'"),
])
def test_bad_configs_name_the_field(body, message):
    with pytest.raises(UserError) as err:
        recipe(body)
    assert message in str(err.value)


def test_every_transform_is_a_recipe_key_with_documented_defaults():
    fields = RestructureConfig.model_fields
    for name, entry in TRANSFORMS.items():
        assert name in fields and fields[name].description == entry.summary
        defaults = entry.Config()
        assert defaults.skip_first is True
        if hasattr(defaults, "init"):  # the data-driven start is the default, random the opt-out
            assert defaults.init != "random"


@pytest.mark.e2e
def test_pipeline_run_records_details_and_reports(tmp_path):
    """train (1 epoch, 16 px digits) -> restructure with four transforms, through the real pipeline."""
    from edge_pipeline.models.store import load_model
    from edge_pipeline.pipeline import Pipeline
    from edge_pipeline.report import write_reports

    r = recipe("{depthwise_separable: {include: ['features.1*']}, factorize: {}, low_rank: {energy: 0.6}, "
               "gap_head: {}, calibration_samples: 64}")
    Pipeline(r, tmp_path).run()
    stage = tmp_path / "02-restructure"
    details = json.loads((stage / "details.json").read_text())
    assert details["order"] == ["depthwise_separable", "factorize", "low_rank", "gap_head"]
    assert details["calibration_samples"] == 64
    transforms = details["transforms"]
    for name in details["order"]:
        facts = transforms[name]
        assert facts["replaced"] >= 1, name
        assert facts["params_after"] < facts["params_before"], name
        assert facts["macs_after"] <= facts["macs_before"], name
        assert 0 <= facts["reconstruction"]["mean"] <= facts["reconstruction"]["max"]
    # each transform starts where the previous one left off
    assert transforms["factorize"]["params_before"] == transforms["depthwise_separable"]["params_after"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stages"][1]["model"]["params"] == transforms["gap_head"]["params_after"]
    model = load_model(stage)
    assert [e.transform for e in model.edits] == details["order"]

    write_reports(tmp_path, metrics, "t")
    report = (tmp_path / "report.md").read_text()
    assert "## Restructure" in report
    for name in details["order"]:
        assert f"| {name} |" in report
    assert "<h2>Restructure</h2>" in (tmp_path / "report.html").read_text()

    # unchanged recipe: cached; reordered transforms: the restructure stage reruns
    assert [e["status"] for e in Pipeline(r, tmp_path).run()] == ["cached", "cached"]
    swapped = recipe("{depthwise_separable: {include: ['features.1*']}, low_rank: {energy: 0.6}, factorize: {}, "
                     "gap_head: {}, calibration_samples: 64}")
    assert [e["status"] for e in Pipeline(swapped, tmp_path).run()] == ["cached", "done"]


def test_a_transform_with_nothing_to_do_warns_and_a_glob_typo_fails(tmp_path):
    from edge_pipeline.pipeline import Pipeline

    nothing = recipe("{share: {}}")  # vgg_small has no repeated blocks
    entries = Pipeline(nothing, tmp_path / "a").run()
    details = json.loads((tmp_path / "a" / "02-restructure" / "details.json").read_text())
    assert details["transforms"]["share"]["replaced"] == 0
    assert entries[1]["model"]["params"] == entries[0]["model"]["params"]
    typo = recipe("{low_rank: {include: ['classifer.*']}}")
    with pytest.raises(UserError, match=r"stages\[1\]\.restructure\.low_rank\.include: 'classifer\.\*' matches no module"):
        Pipeline(typo, tmp_path / "b").run()


def test_report_section_from_details(tmp_path):
    from edge_pipeline.report.sections import build_sections

    stage = tmp_path / "02-restructure"
    stage.mkdir()
    details = {"order": ["low_rank"], "calibration_samples": 32, "transforms": {"low_rank": {
        "replaced": 3, "params_before": 2000, "params_after": 1000, "macs_before": 4000, "macs_after": 3000,
        "reconstruction": {"mean": 0.1, "max": 0.2, "logits_rel_error": 0.05, "top1_agreement": 0.99,
                           "bn_refreshed": 2, "before_bn_refresh": {"top1_agreement": 0.5}},
        "edit": {"skipped": [{"path": "fc", "reason": "rank 10 of 10 would not save weights"}]}}}}
    (stage / "details.json").write_text(json.dumps(details))
    metrics = {"stages": [{"name": "train", "type": "train"}, {"name": "restructure", "type": "restructure"}]}
    (section,) = [s for s in build_sections(tmp_path, metrics) if s.title == "Restructure"]
    assert "| low_rank | 3 | 2.00k -> 1.00k (0.50x) | 4.00k -> 3.00k (0.75x) | 10.0% / 20.0% | 5.0% | 99.0% |" in section.markdown
    assert "fc: rank 10 of 10 would not save weights" in section.markdown
    assert "agreement before that 50.0%" in section.markdown


def test_every_registered_transform_has_code_and_every_code_is_registered():
    from edge_pipeline.stages.restructure import TRANSFORMS
    from edge_pipeline.stages.runners.restructure import APPLY

    assert sorted(APPLY) == TRANSFORMS.names()
