"""Every registered stage: a typed config that rejects unknown keys and a consistent declaration."""

from __future__ import annotations

import pydantic
import pytest

from edge_pipeline.stages import STAGES
from edge_pipeline.stages.base import Stage, StageConfig

# The smallest valid body for stages with required fields.
MINIMAL = {"restructure": {"depthwise_separable": {}}}


@pytest.mark.parametrize("name", STAGES.names())
def test_stage_declares_itself(name):
    cls = STAGES.get(name)
    assert issubclass(cls, Stage) and cls.type == name
    assert issubclass(cls.Config, StageConfig)
    assert cls.produces in ("model", "calibration", "tflite", "profiles")
    assert set(cls.needs) <= {"model", "calibration", "tflite", "profiles"}


@pytest.mark.parametrize("name", STAGES.names())
def test_config_has_defaults_and_forbids_unknown_keys(name):
    cls = STAGES.get(name)
    config = cls.Config.model_validate(MINIMAL.get(name, {}))
    assert config.name is None
    with pytest.raises(pydantic.ValidationError) as info:
        cls.Config.model_validate({**MINIMAL.get(name, {}), "definitely_not_a_key": 1})
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    cls.Config.model_json_schema()  # documentable


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="duplicate stage registration"):
        STAGES.register("train", STAGES.get("train"))


def test_restructure_needs_a_transform():
    with pytest.raises(pydantic.ValidationError, match="at least one transform"):
        STAGES.get("restructure").Config.model_validate({})
