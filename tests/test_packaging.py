"""What an installed package carries: a wheel built from this tree holds the
example schema that ``schemacache up`` and ``schemacache demo`` apply."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import schemacache
from schemacache.cluster import examples_dir

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 300.0


def test_examples_are_found_inside_the_package() -> None:
    found = examples_dir()
    assert found is not None
    assert found.parent == Path(schemacache.__file__).resolve().parent
    assert sorted(p.name for p in found.glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "examples").glob("*.yaml")
    ), "examples/ at the top of the tree is the packaged folder"


def test_wheel_carries_examples_and_type_marker(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "-w", str(tmp_path / "dist"), str(tree)],
        check=True, capture_output=True, timeout=BUILD_TIMEOUT,
    )
    (wheel,) = (tmp_path / "dist").glob("schemacache-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "examples").glob("*.yaml")}
    assert shipped and {f"schemacache/examples/{n}" for n in shipped} <= names
    assert "schemacache/py.typed" in names
    console = {p.name for p in (ROOT / "src/schemacache/api/static").iterdir()}
    assert {"index.html", "console.js", "console.css"} <= console
    assert {f"schemacache/api/static/{n}" for n in console} <= names, "the console ships"
    assert wheel.name.startswith(f"schemacache-{schemacache.__version__}-"), (
        "the distribution's version is the package's __version__")
