"""`edge-pipeline deploy` and `edge-pipeline predict`: argument checks and printing around
releases.py and the runner (the CLI module only parses and calls these)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import PipelineError, UserError
from ..profiling.devices import get_device
from . import edge_predict
from .bundle import open_bundle
from .names import check_root
from .releases import (
    deploy,
    format_listing,
    format_outcomes,
    keep_releases,
    list_releases,
    listing_json,
    remove_release,
    resolve_app,
    rollback,
)
from .targets import open_target

MAX_KEEP = 10_000


def deploy_command(args: argparse.Namespace) -> int:
    managing = [flag for flag, on in (("--list", args.list), ("--rollback", args.rollback), ("--remove", args.remove)) if on]
    if args.source and managing:
        raise UserError(f"deploy: give a run or export folder to deploy, or {managing[0]}, not both")
    if not args.source and not managing and args.keep is None:
        raise UserError("deploy: give a run or export folder to deploy, or one of --list, --rollback, --remove RELEASE, --keep K")
    if args.keep is not None and not 1 <= args.keep <= MAX_KEEP:
        raise UserError(f"--keep: keep between 1 and {MAX_KEEP} releases, got {args.keep}")
    if args.json and not args.list:
        raise UserError("--json goes with --list")
    if args.precision and not args.source:
        raise UserError("--precision goes with a folder to deploy")
    root = check_root(args.root) if args.root else None
    if args.source:
        return _deploy(args, root)
    return _manage(args, root)


def _deploy(args: argparse.Namespace, root: str | None) -> int:
    bundle = open_bundle(args.source)
    started = time.perf_counter()
    outcomes = deploy(bundle, args.device, args.precision, args.app, root, keep=args.keep)
    print(format_outcomes(outcomes))
    for outcome in outcomes:
        if outcome.ok:
            print(f"{outcome.device}: current -> {outcome.where}"
                  + (f" (removed {len(outcome.removed)} old release(s))" if outcome.removed else ""))
    failed = [o for o in outcomes if not o.ok]
    print(f"deployed to {len(outcomes) - len(failed)} of {len(outcomes)} device(s) in {time.perf_counter() - started:.1f}s")
    if len(outcomes) == 1 and failed and failed[0].error is not None:
        raise failed[0].error  # one device: its own error and exit code (2 for bad input, 1 for a failure)
    if failed:
        raise PipelineError(f"deploy failed on {', '.join(o.device for o in failed)} (the reasons are above); "
                            "current is unchanged there")
    return 0


def _manage(args: argparse.Namespace, root: str | None) -> int:
    listings = {}
    for name in args.device:
        target = open_target(get_device(name), root)
        app = resolve_app(target, args.app)
        if args.list:
            listings[target.name] = list_releases(target, app)
            if not args.json:
                print(format_listing(target.name, listings[target.name]))
        elif args.rollback:
            started = time.perf_counter()
            old, new = rollback(target, app)
            print(f"{target.name}: {app}: current {old} -> {new} (rolled back in {time.perf_counter() - started:.1f}s)")
        elif args.remove:
            remove_release(target, app, args.remove)
            print(f"{target.name}: {app}: removed {args.remove}")
        if args.keep is not None:
            removed = keep_releases(target, app, args.keep)
            print(f"{target.name}: {app}: kept the newest {args.keep} (and the current); removed {len(removed)}"
                  + (f": {', '.join(removed)}" if removed else ""))
    if args.list and args.json:
        data = {name: listing_json(listing) for name, listing in listings.items()}
        print(json.dumps(next(iter(data.values())) if len(data) == 1 else data, indent=2))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """Classify images on this machine with the runner a device runs (in this process)."""
    if not 1 <= args.top_k <= edge_predict.MAX_TOP_K:
        raise UserError(f"--top-k: between 1 and {edge_predict.MAX_TOP_K}, got {args.top_k}")
    if args.benchmark is not None and not 1 <= args.benchmark <= edge_predict.MAX_BENCHMARK_RUNS:
        raise UserError(f"--benchmark: between 1 and {edge_predict.MAX_BENCHMARK_RUNS} runs, got {args.benchmark}")
    if not 1 <= args.threads <= 256:
        raise UserError(f"--threads: between 1 and 256, got {args.threads}")
    bundle = open_bundle(args.source)
    runner_args = argparse.Namespace(bundle=str(bundle.folder), precision=args.precision, images=args.images,
                                     top_k=args.top_k, benchmark=args.benchmark, threads=args.threads)
    try:
        result = edge_predict.classify(runner_args)
    except edge_predict.InputError as exc:
        raise UserError(str(exc)) from None
    except edge_predict.ModelError as exc:
        raise PipelineError(str(exc)) from None
    if args.json:
        print(json.dumps(result))
    else:
        edge_predict.print_human(result, sys.stdout)
    return 0
