"""Command line: parse, call the library, print. Heavy libraries are imported inside commands,
so `--help` and `validate` answer in well under two seconds."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import EdgePipelineError


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline
    from .recipe import load_recipe
    from .report import print_devices, print_table, write_reports
    from .rundir import RunDir

    recipe = load_recipe(args.recipe, args.set)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    if args.nproc > 1:
        return launch_ranks(args, out)
    from . import distributed
    from .cores import CoresLock
    from .stagestore import StageStore

    store = StageStore(args.store).claim() if args.store else None
    cores = CoresLock(args.cores_lock) if args.cores_lock else None
    distributed.init()
    try:
        Pipeline(recipe, out, args.force, store=store, cores=cores).run()
    finally:
        distributed.shutdown()
    if not distributed.is_leader():
        return 0
    run = RunDir(out)
    metrics = run.read_metrics()
    title = recipe.report.title or f"{recipe.name}: stage by stage"
    records = write_reports(run, metrics, title, plots=recipe.report.plots)
    print_table(records, title)
    print_devices(run, metrics)
    print(f"run folder: {out}  (metrics.json, report.md, report.html)")
    return 0


def launch_ranks(args: argparse.Namespace, out: Path) -> int:
    """`run --nproc N`: N local processes (gloo on CPU, NCCL on GPUs), like torchrun would start."""
    from . import distributed
    from .errors import UserError

    if distributed.world()[1] > 1:
        raise UserError("--nproc: this process was already launched distributed (torchrun); drop --nproc")
    from .rundir import RunDir

    run = RunDir(out)
    run.claim()  # before the rank logs go in: the folder must be ours (or new) first
    argv = ["run", args.recipe, "--out", str(out)] + [f"--set={s}" for s in args.set] + [f"--force={f}" for f in args.force]
    argv += [f"--store={args.store}"] if args.store else []
    return distributed.launch(argv, args.nproc, log_dir=str(run.logs_dir))


def cmd_validate(args: argparse.Namespace) -> int:
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    if args.print:
        print(recipe.resolved_yaml(), end="")
    else:
        stages = ", ".join(s.name for s in recipe.stages)
        print(f"ok: {args.recipe}: recipe {recipe.name!r}, {len(recipe.stages)} stages ({stages})")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .artifacts import atomic_write_json
    from .convert.inspect import inspect_tflite
    from .profiling.devices import get_device
    from .profiling.runner import profile_model

    model = Path(args.model)
    inspect_tflite(model)  # a corrupt or non-TFLite file fails here, with its name, before any device work
    device = get_device(args.device_file or args.device)
    samples = None
    if args.inputs:
        from .artifacts import read_npy
        from .convert.diagnose import check_input_samples

        samples = read_npy(args.inputs, what=".npy array of inputs")  # bounded, never unpickled
        samples = check_input_samples(samples, model, args.inputs)  # shape and dtype: exit 2 naming both
    prediction = None
    if args.predict:
        from .profiling.predict import predict_file

        prediction = predict_file(model, device, args.threads)  # builds or extends the device's table first
    profile = profile_model(model, device, args.threads, samples=samples)
    if prediction is not None:
        from .profiling.predict import learn_from

        learn_from(device, profile, prediction, args.threads)
        profile.update(prediction.fields())
    text = json.dumps(profile, indent=2)
    if prediction is not None:
        print(_predicted_line(profile), file=sys.stderr if not args.out else sys.stdout)
    if args.out:
        atomic_write_json(args.out, profile)
        lat, peak = profile["latency_ms"], profile["peak_rss_mb"]
        emulated = " (emulated)" if profile.get("emulated") else ""
        print(f"{device.name}{emulated}: {model.name} median {lat['median']:.3f} ms, p90 {lat['p90'] or float('nan'):.3f} ms, "
              f"peak {'-' if peak is None else format(peak, '.1f')} MB, valid={profile['valid']} -> {args.out}")
    else:
        print(text)
    return 0


def _predicted_line(profile: dict) -> str:
    measured, predicted = profile["latency_ms"]["median"], profile["predicted_ms"]
    error = (predicted - measured) / measured if measured else float("nan")
    table = profile["predictor"]
    return (f"{profile['device']}: {profile['model']} predicted {predicted:.4f} ms, measured {measured:.4f} ms "
            f"({error:+.1%}; table {table['table']}, {table['entries']} entries)")


def cmd_inspect(args: argparse.Namespace) -> int:
    from .convert.inspect import inspect_tflite

    info = inspect_tflite(args.model)
    compat = None
    if args.device:
        from .convert.compat import check_device
        from .profiling.devices import get_device

        compat = check_device(args.model, get_device(args.device))
        info["compatibility"] = compat.to_dict()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0 if compat is None or compat.ok else 1
    print(f"{info['file']}: {info['size_bytes']} bytes, {info['op_count']} ops, {len(info['tensors'])} tensors, "
          f"weights {info['weight_bytes']} bytes, min_runtime_version {info['min_runtime_version'] or '?'}")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            q = t.get("quantization")
            qtext = f" scale={q['scale']} zero_point={q['zero_point']}" if q else ""
            print(f"  {kind[:-1]:<6} {t['name']}: {t['dtype']} {t['shape']}{qtext}")
    print("  ops:")
    for name, count in info["ops"].items():
        print(f"    {name:<28} x{count:<4} v{info['op_versions'].get(name, '?')}")
    largest = info["largest_activation"]
    print(f"  activations: {info['activation_dtypes']}; weights: {info['weight_dtypes']}; "
          f"{info['quantized_tensors']} quantized tensors")
    if largest:
        print(f"  largest activation: {largest['name']} {largest['shape']} ({largest['bytes']} bytes)")
    print(f"  TRANSPOSE ops: {info['transposes']}; Flex ops: {', '.join(info['flex_ops']) or 'none'}; "
          f"custom ops: {', '.join(info['custom_ops']) or 'none'}")
    if args.tensors:
        print("  tensors:")
        for t in info["tensors"]:
            q = t.get("quantization")
            qtext = f" scale={q['scale']} zero_point={q['zero_point']} axis={q['axis']}" if q else ""
            print(f"    {t['index']:>4} {t['dtype']:<8} {str(t['shape']):<18} {t['bytes']:>9} B  {t['name']}{qtext}")
    if compat is not None:
        print(f"  {args.device}: {compat.line()}")
        return 0 if compat.ok else 1
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Per-layer error of a reduced-precision .tflite against its float32 reference."""
    from .convert.compat import ensure_loadable
    from .convert.diagnose import check_pair, diagnose, diagnosis_inputs, format_table
    from .convert.inspect import read_graph
    from .errors import UserError

    paths = [Path(p) for p in args.paths]
    onnx_path = Path(args.onnx) if args.onnx else None
    inputs_path = Path(args.inputs) if args.inputs else None
    if len(paths) == 1 and paths[0].is_dir():
        float_path, quant_path, found_onnx, found_inputs = _run_dir_models(paths[0], args.precision)
        onnx_path, inputs_path = onnx_path or found_onnx, inputs_path or found_inputs
    elif len(paths) == 2:
        float_path, quant_path = paths
    else:
        raise UserError("diagnose: give a run folder, or FLOAT.tflite QUANT.tflite")
    check_pair(read_graph(float_path), read_graph(quant_path))  # structure and order, before any runtime
    for path in (float_path, quant_path):
        ensure_loadable(path)  # in a subprocess first: a corrupt file must not crash this process
    inputs, source = diagnosis_inputs(float_path, inputs_path, args.samples)
    result = diagnose(float_path, quant_path, inputs, onnx_path)
    if args.json:
        print(json.dumps(result.to_dict(top=args.top), indent=2))
        return 0
    print(f"{quant_path} vs {float_path}: {source}")
    print(f"  matched {len(result.layers)} of {result.float_ops} float ops ({result.methods}); "
          f"{'verified' if result.verified else 'NOT verified'}; input quantization error {result.input_error:.4f}")
    for note in result.notes:
        print(f"  note: {note}")
    print(format_table(result.ranked()[: args.top], markdown=False))
    return 0


def _run_dir_models(run_dir: Path, precision: str | None):
    """(float32 file, reduced file, model.onnx, calibration.npy) of a run folder's last export stage."""
    from .errors import UserError
    from .rundir import CALIBRATION_FILE, ONNX_FILE, RunDir

    run = RunDir(run_dir)
    metrics = run.read_metrics()
    export = run.last_stage_of(metrics, "export")
    if export is None:
        raise UserError(f"{run_dir}: the run has no export stage")
    entry, folder = export
    artifacts = {a["precision"]: run.resolve(a["path"]) for a in entry.get("artifacts", [])}
    reduced = [p for p in artifacts if p != "float32"]
    precision = precision or (reduced[0] if reduced else None)
    if precision not in artifacts or "float32" not in artifacts:
        raise UserError(f"{run_dir}: no {precision or 'reduced-precision'} file next to float32; exported: {', '.join(artifacts)}")
    quantize = run.last_stage_of(metrics, "quantize")
    calibration = quantize[1] / CALIBRATION_FILE if quantize else None
    return (artifacts["float32"], artifacts[precision], folder / ONNX_FILE,
            calibration if calibration is not None and calibration.is_file() else None)


def cmd_devices(args: argparse.Namespace) -> int:
    from .errors import PipelineError, UserError
    from .profiling.devices import catalog, load_device_file
    from .profiling.transports import make_transport

    files = dict(sorted(catalog().items()))
    extras = {load_device_file(extra).name: Path(extra) for extra in args.device_file}
    files.update(extras)
    if args.names:
        unknown = [n for n in args.names if n not in files]
        if unknown:
            raise UserError(f"unknown device {', '.join(map(repr, unknown))}; known: {', '.join(files)}")
        files = {**{n: files[n] for n in args.names}, **extras}  # files given by --device-file are named too
    # Every file is valid before anything runs; files found by name get the rules for ./devices.
    devices = [load_device_file(path, implicit=name not in extras) for name, path in files.items()]
    unreachable: list[str] = []
    for device in devices:
        line = f"{device.name:<18} {device.transport.kind:<6} {device.arch:<8} {device.runtime.name:<16} {device.description}"
        if args.check:
            problem = make_transport(device).check()
            if problem is not None:
                unreachable.append(device.name)
            line += "\n  -> reachable" if problem is None else f"\n  -> unreachable: {problem}"
        print(line)
    if args.check:
        print(f"{len(files) - len(unreachable)} of {len(files)} devices reachable")
    # A device asked for by name (or file) that cannot be reached fails the command (exit 1), so
    # scripts can use `devices --check NAME`; a survey of the whole catalog only reports.
    if args.check and (args.names or args.device_file) and unreachable:
        raise PipelineError(f"devices --check: {', '.join(unreachable)} not reachable (the reason is above); "
                            "fix the device file or the connection")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .catalog import recipe_summary, shipped_recipes

    for name, path in shipped_recipes().items():
        print(f"{name:<16} {recipe_summary(path.read_text(encoding='utf-8'))}")
    print("copy one to this folder with: edge-pipeline init NAME [--out FILE]")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from .catalog import copy_recipe

    out = copy_recipe(args.name, Path(args.out or f"{args.name}.yaml"))
    print(f"wrote {out} (recipe {args.name!r}); next: edge-pipeline validate {out} && edge-pipeline run {out}")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from .errors import UserError
    from .stagedoc import render
    from .stages import STAGES

    unknown = [n for n in args.names if n not in STAGES]
    if unknown:
        raise UserError(f"unknown stage {', '.join(map(repr, unknown))}; known: {', '.join(STAGES.names())}")
    print(render(args.names or STAGES.registered()))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report.compare import load_baseline_notes, load_recommendations, load_records, print_compare, write_compare

    records = load_records(args.paths)
    recommendations, notes = load_recommendations(args.paths), load_baseline_notes(args.paths)
    out = Path(args.out)
    written = write_compare(records, out, args.title, recommendations, notes)
    print_compare(records, args.title, recommendations, notes)
    print(f"compare: {len(records)} profiles -> {written['markdown']}, {written['html']}, {out / 'plots'}/*.png")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep.command import sweep_command

    return sweep_command(args)


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy.commands import deploy_command

    return deploy_command(args)


def cmd_predict(args: argparse.Namespace) -> int:
    from .deploy.commands import predict_command

    return predict_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-pipeline",
        description="PyTorch CNN -> restructured, pruned, distilled, int8 TFLite, profiled on devices.",
    )
    parser.add_argument("--version", action="version", version=f"edge-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a recipe end to end (cached stages are reused)")
    p.add_argument("recipe")
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a recipe value, e.g. stages.2.prune.ratio=0.3")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="rerun this stage even if cached ('all' for every stage)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N data-parallel processes on this machine (or launch with torchrun instead)")
    p.add_argument("--store", metavar="DIR", help="a stage store shared with other runs: stages found there (same cache key) "
                   "are copied, not computed; computed stages are added (sweeps use one)")
    p.add_argument("--cores-lock", help=argparse.SUPPRESS)  # set by `sweep --jobs N` (see cores.py)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a recipe without running it")
    p.add_argument("recipe")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    p.add_argument("--print", action="store_true", help="print the resolved recipe (defaults filled in)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("profile", help="measure one .tflite model on a device")
    p.add_argument("model")
    p.add_argument("--device", default="host", help="device name (see `edge-pipeline devices`; default: host)")
    p.add_argument("--device-file", help="a device YAML file (instead of --device)")
    p.add_argument("--threads", type=int)
    p.add_argument("--inputs", metavar="NPY", help="NHWC float inputs (.npy, normalized as the model expects): "
                   "also run them on the device and compare the outputs with this host's")
    p.add_argument("--predict", action="store_true", help="also predict the latency from the device's latency table "
                   "(its missing ops are timed on the device first) and print predicted beside measured")
    p.add_argument("--out", help="write the profile JSON here (default: print it)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("inspect", help="ops, versions, tensors and quantization of a .tflite model")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tensors", action="store_true", help="list every tensor with its quantization")
    p.add_argument("--device", help="also check that the model loads on this device's runtime (exit 1 if not)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("diagnose", help="per-layer error of a quantized .tflite against its float32 model")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a run folder, or FLOAT.tflite QUANT.tflite")
    p.add_argument("--precision", help="which exported file of a run folder (default: the first reduced one)")
    p.add_argument("--inputs", help=".npy of NHWC float inputs (default: the run's calibration set)")
    p.add_argument("--onnx", help="the ONNX model, to name layers after the PyTorch modules")
    p.add_argument("--samples", type=int, default=32, help="inputs to run (default: 32)")
    p.add_argument("--top", type=int, default=10, help="layers to show (default: 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("stages", help="every stage's recipe options: type, default, meaning")
    p.add_argument("names", nargs="*", metavar="STAGE", help="only these stages")
    p.set_defaults(func=cmd_stages)

    p = sub.add_parser("devices", help="list device profiles (and, with --check, which are reachable)")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these devices (default: all)")
    p.add_argument("--check", action="store_true",
                   help="also say which are reachable and why not (exit 1 if a device named here is not)")
    p.add_argument("--device-file", action="append", default=[], metavar="FILE", help="also list this device YAML file")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("recipes", help="list the example recipes shipped with edge-pipeline")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("init", help="copy a shipped recipe into this folder, to edit and run")
    p.add_argument("name", metavar="NAME", help="a shipped recipe (see `edge-pipeline recipes`)")
    p.add_argument("--out", metavar="FILE", help="where to write it (default: NAME.yaml); an existing file is never replaced")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("compare", help="device x model table and plots from profile files or run dirs")
    p.add_argument("paths", nargs="+", metavar="PATH", help="profile JSON files, folders of them, or run dirs")
    p.add_argument("--out", default="runs/compare", help="output folder (default: runs/compare)")
    p.add_argument("--title", default="Device comparison")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="run recipe variants (a grid), shared stages once; Pareto fronts and the best per device")
    p.add_argument("source", nargs="?", metavar="RECIPE|SWEEP_FILE", help="a recipe, or a sweep file (recipe: + grid:)")
    p.add_argument("--grid", action="append", default=[], metavar="PATH=[v1,v2]",
                   help="values of one recipe path, e.g. stages.prune.ratio=[0.3,0.5]; a stage: stages.restructure=[keep,drop]")
    p.add_argument("--zip", action="store_true", help="pair the grids' values (all the same length) instead of every combination")
    p.add_argument("--devices", metavar="A,B", help="profile every variant on these devices (default: the recipe's)")
    p.add_argument("--max-latency-ms", type=float, metavar="X", help="best variant: median latency at most X ms")
    p.add_argument("--device", metavar="NAME", help="the device the latency budget is for (default: every device)")
    p.add_argument("--min-accuracy", type=float, metavar="Y", help="best variant: test accuracy at least Y (0..1)")
    p.add_argument("--max-size-kb", type=float, metavar="Z", help="best variant: file at most Z KB")
    p.add_argument("--jobs", type=int, metavar="N", help="variants run at once on this machine (default 1; timing runs alone)")
    p.add_argument("--out", metavar="DIR", help="sweep folder (default: sweeps/<recipe name>)")
    p.add_argument("--store", metavar="DIR", help="stage store to share (default: DIR/store); on a shared file system for clusters")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--plan", metavar="DIR", help="only write the variants (recipes, plan.json, slurm-array.sh) into DIR")
    where.add_argument("--collect", metavar="DIR", help="only gather DIR's finished runs: table, fronts, best.yaml")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("deploy", help="install a run's model on devices, verified there; list, roll back, remove releases")
    p.add_argument("source", nargs="?", metavar="RUN_DIR|EXPORT_DIR", help="the run (or its export folder) to deploy")
    p.add_argument("--device", action="append", required=True, metavar="NAME",
                   help="device name or device file (repeat for several: they deploy in parallel)")
    p.add_argument("--precision", help="which exported file (default: the run's recommendation for the device, else model.tflite)")
    p.add_argument("--app", help="the app folder on the device (default: the recipe name)")
    p.add_argument("--root", metavar="DIR", help="folder on the device that holds the apps (default: home on ssh, "
                   "/data/local/tmp/edge-pipeline on adb, ~/.local/share/edge-pipeline/deploy locally, /opt/edge-pipeline in qemu)")
    manage = p.add_mutually_exclusive_group()
    manage.add_argument("--list", action="store_true", help="list the releases on the device (--json for JSON)")
    manage.add_argument("--rollback", action="store_true", help="switch current to the previous verified release")
    manage.add_argument("--remove", metavar="RELEASE", help="remove a release (not the current one)")
    p.add_argument("--keep", type=int, metavar="K", help="remove all but the newest K releases (after a deploy, or alone)")
    p.add_argument("--json", action="store_true", help="with --list: print the releases as JSON")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("predict", help="classify images here with the runner that runs on devices")
    p.add_argument("source", metavar="BUNDLE_OR_RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR", help="image files, folders of images, or - for stdin")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object with every output value")
    p.add_argument("--precision", help="which exported file (default: model.tflite)")
    p.add_argument("--benchmark", type=int, metavar="N", help="also time N inferences")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .procs import Terminated, signal_handlers, sweep_stale_temp_dirs

    sweep_stale_temp_dirs()  # temp folders of runs that were killed (-9): only ours, only dead owners'
    try:
        # SIGTERM/SIGHUP become exceptions, as Ctrl-C does: finally blocks kill children, remove temp folders.
        with signal_handlers():
            return args.func(args)
    except EdgePipelineError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except Terminated as exc:
        print(f"terminated ({exc}): completed stages stay cached; rerun to resume", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted: completed stages stay cached; rerun to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edge-pipeline stages | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a read-only folder or a full disk, wherever the write happened
        from .artifacts import write_refused

        refused = write_refused(exc)
        if refused is None:
            raise
        print(f"error: {refused}", file=sys.stderr)
        return refused.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
