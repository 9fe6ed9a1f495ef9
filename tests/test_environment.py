"""environment.yml (conda-forge) and pyproject.toml pin the same packages at the same versions."""

from __future__ import annotations

import re
import tomllib

import yaml

from sapsam_utils.core.paths import project_root


def normalise(name: str) -> str:
    """PEP 503 name normalisation (SimpleITK and simpleitk, PyYAML and pyyaml are the same)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(spec: str, separator: str) -> tuple[str, str]:
    name, _, version = spec.partition(separator)
    assert version, f"{spec!r} is not pinned with {separator!r}"
    return normalise(name.strip()), version.strip().lstrip("=")


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((project_root() / "pyproject.toml").read_text())["project"]
    return dict(parse(spec, "==") for spec in project["dependencies"])


def environment_pins() -> tuple[dict[str, str], dict]:
    env = yaml.safe_load((project_root() / "environment.yml").read_text())
    pins, pip_section = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep.get("pip", [])
        elif dep not in ("pip",) and not dep.startswith("python="):
            pins.update([parse(dep, "=")])
    for dep in pip_section:
        if not dep.startswith("-e"):  # the project itself
            pins.update([parse(dep, "==")])
    return pins, env


def test_same_packages_and_versions():
    pins, _ = environment_pins()
    expected = pyproject_pins()
    assert pins == expected, (f"only in environment.yml: {sorted(set(pins) - set(expected))}, "
                              f"only in pyproject.toml: {sorted(set(expected) - set(pins))}, "
                              f"different versions: {sorted(k for k in pins if k in expected and pins[k] != expected[k])}")


def test_environment_uses_conda_forge_and_installs_the_project():
    _, env = environment_pins()
    assert env["channels"] == ["conda-forge"]
    pip_section = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert any(dep.split("#")[0].strip() == "-e ." for dep in pip_section)
    python = next(dep for dep in env["dependencies"] if isinstance(dep, str) and dep.startswith("python="))
    requires = tomllib.loads((project_root() / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and python == "python=3.11"


def test_book_toolchain_is_pinned_to_jupyter_book_1_0():
    assert pyproject_pins()["jupyter-book"].startswith("1.0.")
