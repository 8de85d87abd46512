"""The package works installed, not only from the checkout: the device catalog and the example recipes
are package data, `recipes` lists them, `init` copies one (never over an existing file), and a wheel
installed into a fresh folder validates, lists devices and profiles a model from outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_pipeline import cli
from edge_pipeline.catalog import recipe_summary, shipped_recipes
from tests.conftest import REPO

SHIPPED = ["precisions", "prune_distill", "quickstart", "structures"]


def test_recipes_lists_every_shipped_recipe_with_its_summary(capsys):
    assert cli.main(["recipes"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in SHIPPED:
        line = next(line for line in out if line.split()[0] == name)
        assert line.split(None, 1)[1] == recipe_summary(shipped_recipes()[name].read_text())
    assert recipe_summary(shipped_recipes()["quickstart"].read_text()).startswith("The default main job: a small VGG-style CNN")


def test_recipe_summary_is_the_first_sentence_on_one_short_line():
    assert recipe_summary("# Prune it. Then more.\nname: x\n") == "Prune it."
    assert recipe_summary("name: x\n") == "(no description)"
    long = recipe_summary("# " + "word " * 60 + "end.\n")
    assert len(long) <= 100 and long.endswith("...") and "\n" not in long


def test_init_copies_a_shipped_recipe_that_validates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "quickstart"]) == 0
    copy = tmp_path / "quickstart.yaml"
    assert copy.read_bytes() == shipped_recipes()["quickstart"].read_bytes()
    assert cli.main(["init", "prune_distill", "--out", "mine.yaml"]) == 0
    assert (tmp_path / "mine.yaml").read_bytes() == shipped_recipes()["prune_distill"].read_bytes()
    capsys.readouterr()
    assert cli.main(["validate", "quickstart.yaml"]) == 0
    assert "ok: quickstart.yaml: recipe 'quickstart'" in capsys.readouterr().out


@pytest.mark.parametrize("existing", ["file", "dangling-symlink", "symlink-to-a-user-file"])
def test_init_never_replaces_an_existing_file(tmp_path, monkeypatch, capsys, existing):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    target = tmp_path / "quickstart.yaml"
    if existing == "file":
        target.write_text("my own recipe\n")
    elif existing == "dangling-symlink":
        target.symlink_to(tmp_path / "nowhere.yaml")
    else:
        target.symlink_to(notes)
    before = target.read_text() if target.exists() else None
    assert cli.main(["init", "quickstart"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: quickstart.yaml: already exists; choose another file with --out, or remove it first"]
    assert (target.read_text() if target.exists() else None) == before
    assert notes.read_text() == "my notes\n" and not (tmp_path / "nowhere.yaml").exists()


def test_init_of_an_unknown_recipe_names_the_shipped_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown recipe 'nope'; shipped recipes: precisions, prune_distill")
    assert list(tmp_path.iterdir()) == []


def test_recipes_and_init_stay_free_of_torch_and_tensorflow(tmp_path):
    script = textwrap.dedent("""\
        import sys
        from edge_pipeline.cli import main
        assert main(["recipes"]) == 0 and main(["init", "quickstart", "--out", "q.yaml"]) == 0
        heavy = sorted(m for m in ("torch", "tensorflow", "onnx", "onnx2tf") if m in sys.modules)
        print("HEAVY", heavy)
        """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


# ---- installed from a wheel ----

# Runs the CLI from the installed copy and reports every edge_pipeline module that did not come from it.
CLI_WRAPPER = """\
import os, sys
site = os.path.realpath(os.environ["EP_SITE"])
from edge_pipeline.cli import main
code = main(sys.argv[1:])
outside = sorted(n for n, m in list(sys.modules.items()) if n.startswith("edge_pipeline")
                 and getattr(m, "__file__", None) and not os.path.realpath(m.__file__).startswith(site + os.sep))
print("@@outside", outside, file=sys.stderr)
sys.exit(code)
"""


def copy_source(dest: Path) -> Path:
    """What a wheel is built from (the working tree, not only what is committed), without caches."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "edge_pipeline", dest / "edge_pipeline", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The project built into a wheel and installed (no dependencies, no network) into a plain folder."""
    base = tmp_path_factory.mktemp("installed")
    src, dist, site = copy_source(base / "src"), base / "dist", base / "site"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                   check=True, env=env, capture_output=True, timeout=600)
    wheels = sorted(dist.glob("edge_pipeline-*.whl"))
    assert len(wheels) == 1
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheels[0])],
                   check=True, env=env, capture_output=True, timeout=600)
    work = base / "work"  # outside the checkout, with no devices/ or recipes/ of its own
    work.mkdir()
    return {"site": site, "work": work, "wheel": wheels[0]}


def run_installed(installed, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_PIPELINE_DEVICES", "PYTHONHOME")}
    env.update({"PYTHONPATH": str(installed["site"]), "EP_SITE": str(installed["site"])})
    # -P: neither the working directory nor a script's folder goes on sys.path; -s: no user site.
    return subprocess.run([sys.executable, "-P", "-s", *args], cwd=installed["work"], env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_cli(installed, *argv: str) -> subprocess.CompletedProcess:
    proc = run_installed(installed, "-c", CLI_WRAPPER, *argv)
    assert "@@outside []" in proc.stderr, proc.stderr  # every module of ours came from the installed copy
    return proc


@pytest.mark.slow
def test_the_wheel_carries_the_catalog_and_the_agent(installed):
    import zipfile

    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for device in ("host", "qemu-aarch64", "rpi4", "rpi5", "jetson-orin-nano", "pixel-7", "generic-ssh"):
        assert f"edge_pipeline/catalog/devices/{device}.yaml" in names
    for recipe in SHIPPED:
        assert f"edge_pipeline/catalog/recipes/{recipe}.yaml" in names
    assert "edge_pipeline/profiling/agent.py" in names and "edge_pipeline/convert/tflite_worker.py" in names
    where = run_installed(installed, "-c", "import edge_pipeline; print(edge_pipeline.__file__)")
    assert Path(where.stdout.strip()).resolve().is_relative_to(installed["site"].resolve())


@pytest.mark.slow
def test_installed_recipes_init_validate_and_devices(installed):
    listing = run_cli(installed, "recipes")
    assert listing.returncode == 0 and [line.split()[0] for line in listing.stdout.splitlines()[:4]] == SHIPPED
    init = run_cli(installed, "init", "quickstart", "--out", "qs.yaml")
    assert init.returncode == 0, init.stderr
    validate = run_cli(installed, "validate", "qs.yaml")
    assert validate.returncode == 0 and "ok: qs.yaml: recipe 'quickstart', 7 stages" in validate.stdout, validate.stderr
    again = run_cli(installed, "init", "quickstart", "--out", "qs.yaml")
    assert again.returncode == 2 and "error: qs.yaml: already exists" in again.stderr
    devices = run_cli(installed, "devices")
    assert devices.returncode == 0, devices.stderr
    listed = [line.split()[0] for line in devices.stdout.splitlines() if line and not line.startswith(" ")]
    assert {"host", "qemu-aarch64", "rpi4", "rpi5", "pixel-7"} <= set(listed)
    assert "warning:" not in devices.stderr


@pytest.mark.slow
def test_installed_package_converts_and_profiles_on_the_host(installed):
    """The conversion worker (a subprocess: `python -m edge_pipeline.convert.tflite_worker`) and the
    profiling agent both run from the installed copy; the built-in `host` device comes from the wheel."""
    shutil.copy2(REPO / "tests" / "profiling" / "tiny_models.py", installed["work"] / "tiny_models.py")
    convert = run_installed(installed, "-c", textwrap.dedent("""\
        import os, runpy, sys
        from pathlib import Path
        from edge_pipeline.convert import tflite_convert
        site = os.path.realpath(os.environ["EP_SITE"])
        assert os.path.realpath(tflite_convert.__file__).startswith(site + os.sep), tflite_convert.__file__
        files = runpy.run_path("tiny_models.py")["make_tiny_models"](Path("models"))
        print("@@files", files["int8"])
        """))
    assert convert.returncode == 0, convert.stderr[-2000:]
    model = installed["work"] / "models" / "model_int8.tflite"
    assert model.is_file()
    profile = run_cli(installed, "profile", str(model), "--device", "host", "--out", "host.json")
    assert profile.returncode == 0, profile.stderr
    result = json.loads((installed["work"] / "host.json").read_text())
    assert result["device"] == "host" and result["runtime"]["name"] == "ai-edge-litert"
    assert result["latency_ms"]["runs"] >= 100 and result["latency_ms"]["median"] > 0


def _subcommands() -> list[str]:
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_every_commands_help_is_free_of_heavy_imports(command):
    script = textwrap.dedent(f"""\
        import sys
        from edge_pipeline.cli import main
        try:
            main([{command!r}, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        heavy = sorted(m for m in ("torch", "tensorflow", "onnx", "onnx2tf", "matplotlib") if m in sys.modules)
        print("HEAVY", heavy)
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout and command in proc.stdout
