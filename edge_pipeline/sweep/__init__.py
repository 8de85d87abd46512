"""Sweeps: many variants of one recipe (a grid of values), shared stages computed once, measured on
devices, compared on Pareto fronts, the best variant per device written out as a recipe.

`grid` makes the variants, `plan` writes them down, `execute` runs them on this machine (or a
cluster runs the plan), `collect` gathers the run folders, `pareto` picks; `command` is the CLI's.
"""
