"""The stages' work, one module per stage type (`run(stage, ctx) -> StageResult`), imported only
when that stage runs (see `stages/base.Stage.run`)."""
