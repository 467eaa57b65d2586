"""How the project is packaged: the wheel's top-level packages, and the one-line error when a
generic ``induction`` or ``viz`` of another distribution shadows ours (README, "Installing")."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **extra}


def _source_copy(folder: Path) -> Path:
    """What a source distribution holds, copied, so the build's build/ and egg-info stay out of the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("hiclip", "induction", "viz"):
        shutil.copytree(ROOT / name, folder / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, folder / name)
    return folder


@pytest.mark.slow
def test_the_wheel_installs_hiclip_induction_and_viz_and_works_from_there(tmp_path):
    source = _source_copy(tmp_path / "source")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "wheel").glob("*.whl")
    assert wheel.name.startswith("hiclip_toolkit-0.1.0-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    top = {n.split("/")[0] for n in names}
    assert top == {"hiclip", "induction", "viz", "hiclip_toolkit-0.1.0.dist-info"}, top
    assert "hiclip/model_configs/hiclip-tiny.json" in names and "hiclip/configs/shapes-demo.json" in names
    assert "Name: hiclip-toolkit" in metadata and "License-Expression: MIT" in metadata
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    probe = ("import hiclip, induction, viz, sys; from hiclip.cli import main; "
             "print(hiclip.__file__, induction.__file__, viz.__file__); "
             "sys.exit(main(['score', 'trees', '--gold', sys.argv[1], '--baseline', 'right', '--convention', 'vgnsl']))")
    gold = tmp_path / "gold.txt"
    gold.write_text("( ( a man ) ( riding ( a horse ) ) )\n")
    run = subprocess.run([sys.executable, "-c", probe, str(gold)], cwd=tmp_path, capture_output=True, text=True,
                         env=_env(PYTHONPATH=str(target)), timeout=300)
    assert run.returncode == 0, run.stderr
    paths = run.stdout.splitlines()[0].split()
    assert all(p.startswith(str(target)) for p in paths), paths          # the wheel's copies, not the checkout
    assert "corpus F1" in run.stdout


def test_a_shadowing_viz_package_is_a_one_line_error(tmp_path):
    fake = tmp_path / "fake" / "viz"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""Another distribution\'s viz."""\n')
    gold = tmp_path / "gold.txt"
    gold.write_text("( ( a man ) ( riding ( a horse ) ) )\n")
    run = subprocess.run([sys.executable, "-m", "hiclip.cli", "score", "trees", "--gold", str(gold), "--baseline",
                          "right", "--convention", "vgnsl"], cwd=tmp_path, capture_output=True, text=True,
                         env=_env(PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), str(ROOT)])), timeout=300)
    assert run.returncode == 2
    assert run.stderr.startswith("error: the 'viz' package at ") and run.stderr.count("\n") == 1
    assert "not hiclip-toolkit's" in run.stderr and "Traceback" not in run.stderr
