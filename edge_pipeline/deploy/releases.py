"""Deploy a bundle to devices, and manage the releases there: list, rollback, remove, keep.

A deploy on one device: prepare `releases/.incoming-<id>/`, send the release's files, compare the
sha256 the device computes with ours, run the runner there on the bundle's test images and compare
its outputs with this host's (verify.py), then write `release.json` and, in one step on the device,
rename the folder to `releases/<id>` and switch `current`. Any failure before that step removes the
upload (best effort: a cut connection leaves it to the next deploy, which removes uploads idle for
an hour) and `current` is never touched. Several devices deploy in parallel, each on its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .. import __version__, procs
from ..errors import EdgePipelineError, PipelineError, UserError
from ..profiling.devices import DeviceProfile, get_device
from ..ui import console
from . import edge_predict
from .bundle import Bundle
from .names import check_app, check_release_id, new_release_id
from .samples import SAMPLES_DIR
from .targets import AdbTarget, Target, local_sha256s, open_target
from .verify import compare

RECORD = "release.json"


# ---------------------------------------------------------------------------------------------
# Deploying


@dataclass
class Outcome:
    """What happened on one device."""

    device: str
    precision: str | None = None
    release: str | None = None
    where: str | None = None  # the release folder on the device
    verified: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: EdgePipelineError | None = None
    removed: list[str] = field(default_factory=list)  # pruned by --keep

    @property
    def ok(self) -> bool:
        return self.error is None


class Cancelled(PipelineError):
    pass


def host_reference(bundle: Bundle, precision: str) -> dict[str, Any]:
    """This host's runner result on the bundle's test images: the same file the device runs, in-process."""
    args = edge_predict.build_parser().parse_args(
        [*map(str, bundle.samples()), "--bundle", str(bundle.folder), "--precision", precision, "--top-k", "1"])
    try:
        return edge_predict.classify(args)
    except edge_predict.InputError as exc:
        raise UserError(f"{bundle.folder}: {exc}") from None
    except edge_predict.ModelError as exc:
        raise PipelineError(f"this host: {exc}") from None


def deploy(bundle: Bundle, device_names: list[str], precision: str | None, app: str | None, root: str | None,
           keep: int | None = None) -> list[Outcome]:
    """Deploy to every device (in parallel when several); every argument is checked before any device work."""
    app = check_app(app or bundle.app, "--app" if app else f"{bundle.folder}/metadata.json: recipe")
    devices = [get_device(name) for name in dict.fromkeys(device_names)]  # a device named twice deploys once
    plans = [(device, *bundle.precision_for(device.name, precision)) for device in devices]
    references = {}
    for _, chosen, _ in plans:
        if chosen not in references:
            references[chosen] = host_reference(bundle, chosen)
    cancel = threading.Event()

    def one(plan) -> Outcome:
        device, chosen, why = plan
        outcome = Outcome(device.name, chosen)
        started = time.perf_counter()
        try:
            say(device.name, f"deploying {chosen} ({why})")
            deploy_one(open_target(device, root), bundle, chosen, app, references[chosen], cancel, outcome)
            if keep is not None:
                outcome.removed = keep_releases(open_target(device, root), app, keep)
        except EdgePipelineError as exc:
            outcome.error = exc
            say(device.name, f"[red]failed[/]: {exc}")
        finally:
            outcome.seconds = round(time.perf_counter() - started, 3)
        return outcome

    if len(plans) == 1:
        return [one(plans[0])]
    pool = ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="deploy")
    try:
        futures = [pool.submit(one, plan) for plan in plans]
        return [f.result() for f in futures]
    except BaseException:
        cancel.set()  # the workers stop at their next step, removing their uploads
        raise
    finally:
        pool.shutdown(wait=True)


def deploy_one(target: Target, bundle: Bundle, precision: str, app: str, host: dict[str, Any],
               cancel: threading.Event, outcome: Outcome) -> None:
    files = bundle.release_files(precision)
    model = bundle.metadata["files"][precision]["file"]
    digests = local_sha256s(files)
    release = new_release_id(precision, digests[model])
    outcome.release = release
    incoming = _prepared_folder(target.ops("prepare", app, release), target)
    try:
        size = sum(p.stat().st_size for p in files.values())
        say(target.name, f"uploading {len(files)} files ({size / 1024:.0f} KiB) to {incoming}")
        arrived = target.send(app, release, incoming, files)
        _check_arrived(target, digests, arrived)
        _check_cancel(cancel, target)
        if isinstance(target, AdbTarget) and not target.has_python:
            verified = _verify_load_only(target, incoming, model)
        else:
            verified = _verify_outputs(target, bundle, precision, incoming, host)
        _check_cancel(cancel, target)
        record = release_record(release, app, target.device, precision, model, digests, bundle, verified)
        data = (json.dumps(record, sort_keys=True) + "\n").encode()
        if isinstance(target, AdbTarget):
            with procs.temp_dir("deploy") as tmp:
                (tmp / RECORD).write_bytes(data)
                target.push_record(incoming, tmp / RECORD)
            target.ops("commit", app, release)
        else:
            target.ops("commit", app, release, stdin=data)
    except BaseException:
        _abort(target, app, release)
        raise
    outcome.verified, outcome.where = verified, incoming.rsplit("/.incoming-", 1)[0] + f"/{release}"
    say(target.name, f"[green]current[/] -> {release}")


def _prepared_folder(stdout: str, target: Target) -> str:
    lines = [line[2:] for line in stdout.splitlines() if line.startswith("P /")]
    if not lines:
        raise PipelineError(f"device {target.name}: prepare printed no upload folder ({stdout.strip()[:200]})")
    return lines[-1]


def _check_arrived(target: Target, sent: dict[str, str], arrived: dict[str, str]) -> None:
    for name, digest in sent.items():
        got = arrived.get(name)
        if got != digest:
            raise PipelineError(f"device {target.name}: {name} arrived {'corrupted' if got else 'missing'} "
                                f"(sha256 {got} != {digest}); current is unchanged, deploy again")


def _check_cancel(cancel: threading.Event, target: Target) -> None:
    if cancel.is_set():
        raise Cancelled(f"device {target.name}: cancelled; current is unchanged")


def _verify_outputs(target: Target, bundle: Bundle, precision: str, incoming: str, host: dict[str, Any]) -> dict[str, Any]:
    samples = len(host["predictions"])
    say(target.name, f"verifying on {samples} test images with the runner")
    device = target.run_runner(incoming, [f"{incoming}/{SAMPLES_DIR}", "--bundle", incoming, "--precision", precision,
                                          "--top-k", "1"])
    figures = compare(device, host, precision, bundle.sample_labels())
    if not figures.pop("passed"):
        raise PipelineError(f"device {target.name}: verification failed: {figures['reason']}; current is unchanged")
    figures.update(runtime=device.get("runtime"), arch=device.get("arch"), python=device.get("python"),
                   host_runtime=host.get("runtime"))
    say(target.name, f"verified: top-1 agreement {figures['top1_agreement']:.2%} on {figures['samples']} images, "
                     f"max |diff| {figures['max_abs_diff']:.3g} (tolerance {figures['tolerance']:.3g})")
    return figures


def _verify_load_only(target: AdbTarget, incoming: str, model: str) -> dict[str, Any]:
    """A phone without Python: the model loads and runs there (benchmark_model); outputs are not compared."""
    binary = target.transport.binary()
    if binary is None or not binary.is_file():
        raise UserError(f"device {target.name}: transport.benchmark_model {binary} is not a file; download TFLite's "
                        "Android benchmark_model binary (or set transport.python to a Python on the phone)")
    say(target.name, "no Python on the device: checking that the model loads and runs (benchmark_model)")
    result = target.benchmark(incoming, model, binary)
    latency = result.get("latency_ms") or {}
    return {"samples": 0, "outputs_verified": False,
            "reason": "no Python on the device: sha256 checked, the model loaded and ran under benchmark_model; "
                      "its outputs were not compared with this host's",
            "benchmark_model": {"init_ms": result.get("init_ms"), "median_ms": latency.get("median") or latency.get("mean"),
                                "runs": latency.get("runs")}}


def _abort(target: Target, app: str, release: str) -> None:
    try:
        target.ops("abort", app, release)
    except EdgePipelineError:
        pass  # the connection is gone: the next deploy removes the upload once it is an hour old


def release_record(release: str, app: str, device: DeviceProfile, precision: str, model: str, digests: dict[str, str],
                   bundle: Bundle, verified: dict[str, Any]) -> dict[str, Any]:
    meta = bundle.metadata
    return {
        "id": release, "app": app, "device": device.name, "precision": precision, "model": model,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "files": digests, "run": str(bundle.run_dir) if bundle.run_dir else None, "bundle": str(bundle.folder),
        "recipe": meta.get("recipe"), "recipe_sha256": meta.get("recipe_sha256"),
        "model_edge_pipeline": meta.get("edge_pipeline"), "edge_pipeline": __version__, "verified": verified,
    }


def say(device: str, message: str) -> None:
    console.print(f"  {device}: {message}", soft_wrap=True)  # one line per step, however long its paths


# ---------------------------------------------------------------------------------------------
# Managing releases


@dataclass
class Listing:
    app: str
    root: str
    releases: list[dict[str, Any]]  # oldest first
    current: str | None
    incomplete: list[str]

    def by_id(self, release: str) -> dict[str, Any] | None:
        return next((r for r in self.releases if r["id"] == release), None)


def resolve_app(target: Target, app: str | None) -> str:
    """--app, or the one app with releases under the device's root."""
    if app:
        return check_app(app)
    apps = [line[2:] for line in target.ops("apps", "").splitlines() if line.startswith("A ")]
    if len(apps) == 1:
        return check_app(apps[0], f"device {target.name}")
    if not apps:
        raise UserError(f"device {target.name}: no releases under {target.describe_root()}; deploy first, or pass --app/--root")
    raise UserError(f"device {target.name}: several apps under {target.describe_root()} ({', '.join(sorted(apps))}); pass --app")


def list_releases(target: Target, app: str) -> Listing:
    releases, incomplete, current = [], [], None
    for line in target.ops("list", app).splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "R":
            release, _, text = rest.partition(" ")
            releases.append(_entry(release, text))
        elif kind == "I":
            incomplete.append(rest.strip())
        elif kind == "C":
            current = rest.strip().rsplit("/", 1)[-1] or None
    for entry in releases:
        entry["current"] = entry["id"] == current
    releases.sort(key=lambda r: r["id"])
    return Listing(app, target.describe_root(), releases, current, incomplete)


def _entry(release: str, text: str) -> dict[str, Any]:
    """One release as `--list --json` shows it (DESIGN.md's contract, plus where it came from)."""
    try:
        record = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("verified"), dict):
        return {"id": release, "current": False, "precision": None, "verified": None, "created": None,
                "problem": "release.json missing or unreadable"}
    return {"id": release, "current": False, "precision": record.get("precision"), "verified": record["verified"],
            "created": record.get("created"), "run": record.get("run"), "recipe": record.get("recipe"),
            "recipe_sha256": record.get("recipe_sha256"), "model": record.get("model"), "files": record.get("files")}


def rollback(target: Target, app: str) -> tuple[str, str]:
    """Switch `current` to the newest verified release older than the current one, after checking
    its files' sha256 on the device: (from, to)."""
    listing = list_releases(target, app)
    if listing.current is None:
        raise UserError(f"device {target.name}: app {app} has no current release to roll back from")
    earlier = [r for r in listing.releases if r["id"] < listing.current and r["verified"] and isinstance(r.get("files"), dict)]
    if not earlier:
        raise UserError(f"device {target.name}: no verified release of {app} older than {listing.current} to roll back to")
    chosen = earlier[-1]
    found = _hashes(target, app, chosen["id"])
    for name, digest in chosen["files"].items():
        if found.get(name) != digest:
            raise PipelineError(f"device {target.name}: release {chosen['id']} is damaged ({name} "
                                f"{'changed' if name in found else 'missing'}); not switching; remove it with --remove")
    target.ops("switch", app, chosen["id"])
    return listing.current, chosen["id"]


def _hashes(target: Target, app: str, release: str) -> dict[str, str]:
    from .shell import parse_hashes

    return parse_hashes(target.ops("hash", app, release))


def remove_release(target: Target, app: str, release: str) -> None:
    listing = list_releases(target, app)
    if check_release_id(release) == listing.current:
        raise UserError(f"device {target.name}: release {release} is the current one; roll back (--rollback) "
                        "or deploy another release first")
    if listing.by_id(release) is None:
        raise UserError(f"device {target.name}: no release {release} of {app}; see --list")
    target.ops("remove", app, release)


def keep_releases(target: Target, app: str, keep: int) -> list[str]:
    """Remove all but the newest `keep` releases (the current one always stays): the removed ids."""
    if keep < 1:
        raise UserError(f"--keep: keep at least 1 release, got {keep}")
    listing = list_releases(target, app)
    newest = {r["id"] for r in listing.releases[-keep:]}
    doomed = [r["id"] for r in listing.releases if r["id"] not in newest and r["id"] != listing.current]
    for release in doomed:
        target.ops("remove", app, release)
    return doomed


# ---------------------------------------------------------------------------------------------
# Text for the terminal


def format_outcomes(outcomes: list[Outcome]) -> str:
    rows = [("device", "result", "precision", "release", "verified", "seconds")]
    for o in outcomes:
        if o.ok:
            v = o.verified
            check = (f"{v['samples']} images, top-1 {v['top1_agreement']:.0%}, max|diff| {v['max_abs_diff']:.2g}"
                     if v.get("outputs_verified") else "load + sha256 only")
            rows.append((o.device, "ok", o.precision or "-", o.release or "-", check, f"{o.seconds:.1f}"))
        else:
            rows.append((o.device, "FAILED", o.precision or "-", "-", str(o.error).splitlines()[0][:70], f"{o.seconds:.1f}"))
    return _table(rows)


def format_listing(device: str, listing: Listing) -> str:
    lines = [f"{device}: {listing.app} under {listing.root}"]
    if not listing.releases:
        return lines[0] + ": no releases"
    rows = [("", "release", "precision", "created", "verified", "recipe sha256", "run")]
    for r in listing.releases:
        v = r["verified"]
        check = ("unreadable release.json" if v is None else
                 f"{v.get('samples')} images, top-1 {v.get('top1_agreement', 0):.0%}" if v.get("outputs_verified") else
                 "load + sha256 only")
        rows.append(("*" if r["current"] else "", r["id"], r.get("precision") or "-", r.get("created") or "-", check,
                     (r.get("recipe_sha256") or "-")[:12], r.get("run") or "-"))
    out = "\n".join([*lines, _table(rows)])
    if listing.incomplete:
        out += f"\n  incomplete uploads (removed by the next deploy once idle for an hour): {', '.join(listing.incomplete)}"
    return out


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def listing_json(listing: Listing) -> list[dict[str, Any]]:
    """`deploy --list --json`: DESIGN.md's fields (id, current, precision, verified, created) and where each came from."""
    return [{k: v for k, v in r.items() if k != "files"} for r in listing.releases]
