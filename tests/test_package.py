"""Packaging: the distribution's metadata, and a wheel that holds the whole package.

`.ci/check_wheel` goes further: it installs the wheel in a fresh environment
outside the checkout and runs the command line from there.
"""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from helpers import runs_once

import keras_transformer as kt

tomllib = pytest.importorskip("tomllib")

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTRIBUTION = "keras-paper-transformer"


@pytest.fixture(scope="module")
def project():
    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as file:
        return tomllib.load(file)["project"]


def test_distribution_name_is_ours_and_the_import_name_stays(project):
    # `keras-transformer` on the package index is another project with the same import name.
    assert project["name"] == DISTRIBUTION
    assert project["scripts"] == {"keras-transformer": "keras_transformer_cli:main"}
    assert project["version"] == kt.__version__


def test_extras_name_their_builds(project):
    extras = project["optional-dependencies"]
    assert extras["jax"] == ["jax>=0.4.30"]
    assert extras["jax-cuda12"] == ["jax[cuda12]>=0.4.30"]
    assert extras["torch"] == ["torch==2.13.0"]
    assert extras["tensorflow-cuda"] == ["tensorflow[and-cuda]>=2.21,<2.22"]
    assert any(requirement.startswith("build") for requirement in extras["dev"])
    # `make` installs `.[all]`: it must name this distribution, or pip fetches another one.
    assert extras["ctranslate2"] == ["ctranslate2==4.8.5"]
    assert extras["onnx"] == ["onnx==1.23.2", "onnxscript==0.7.2", "onnxruntime==1.30.0"]
    assert extras["all"] == [f"{DISTRIBUTION}[jax,torch,ctranslate2,onnx,dev]"]


def package_modules(root):
    """Paths of the package's files relative to `root`, without bytecode."""
    found = set()
    for folder, folders, files in os.walk(os.path.join(root, "keras_transformer")):
        folders[:] = [name for name in folders if name != "__pycache__"]
        for name in files:
            if not name.endswith((".pyc", ".pyo")):
                path = os.path.relpath(os.path.join(folder, name), root)
                found.add(path.replace(os.sep, "/"))
    return found


@runs_once
def test_wheel_holds_every_module_and_the_entry_point(tmp_path):
    # Build from a copy, so that the build writes nothing into the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "keras_transformer_cli.py"):
        shutil.copy(os.path.join(REPOSITORY, name), source / name)
    shutil.copytree(
        os.path.join(REPOSITORY, "keras_transformer"),
        source / "keras_transformer",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith(f"keras_paper_transformer-{kt.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"keras_paper_transformer-{kt.__version__}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    expected = package_modules(str(source)) | {"keras_transformer_cli.py"}
    assert expected, "the copy holds the package"
    assert expected <= names, sorted(expected - names)
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/"))]
    assert "keras-transformer = keras_transformer_cli:main" in entry_points
    assert f"Name: {DISTRIBUTION}\n" in metadata
    assert "Provides-Extra: jax-cuda12" in metadata
