"""What produced the book: environment, code version, profile, parameters, seeds, manifest hash.

The runner records one entry per executed notebook (its profile, parameters, seeds, the sha256
of its manifest, the git commit and whether the work tree had uncommitted changes) plus the
environment of the latest run (Python, platform, the pinned packages' installed versions), in
``book/executed/provenance.json``, and renders it as ``book/executed/provenance.md``, which the
book's reproducibility page includes. Entries are kept per notebook because ``--only`` re-runs a
subset: each notebook's entry says what produced *that* notebook.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from sapsam_utils.core.files import write_json
from sapsam_utils.core.paths import project_path

DISTRIBUTION = "sapsam-utils"
JSON_NAME, MARKDOWN_NAME = "provenance.json", "provenance.md"


def sha256_file(path: str | os.PathLike) -> str:
    """Hexadecimal sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_state(root: str | os.PathLike) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout at ``root``.

    ``dirty`` is true when tracked files differ from the commit or untracked, non-ignored files
    exist (the executed notebooks and the workdir are git-ignored, so a run itself does not count).
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def pinned_packages() -> list[str]:
    """Names of the packages that ``pyproject.toml`` pins (as installed in this environment)."""
    names = []
    for requirement in metadata.requires(DISTRIBUTION) or []:
        name = requirement.split(";")[0]
        for mark in "=<>!~[ ":
            name = name.split(mark)[0]
        names.append(name.strip())
    return names


def environment(root: str | os.PathLike) -> dict[str, Any]:
    """Python, platform, CPU count, installed versions of the pinned packages, git state, time."""
    packages = {}
    for name in pinned_packages():
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "packages": packages,
        "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        **git_state(root),
    }


def notebook_record(root: str | os.PathLike, profile: str, params: dict[str, Any], started: float,
                    seconds: float) -> dict[str, Any]:
    """The provenance of one executed notebook.

    The manifest is resolved as the notebooks resolve it (:func:`sapsam_utils.core.paths.project_path`);
    seeds are the parameters named ``seed`` or ``*_seed``.
    """
    record: dict[str, Any] = {
        "profile": profile,
        "parameters": dict(params),
        "seeds": {k: v for k, v in params.items() if k == "seed" or k.endswith("_seed")},
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "seconds": round(seconds, 1),
        **git_state(root),
    }
    if "manifest" in params:
        manifest = project_path(params["manifest"])
        record["manifest_sha256"] = sha256_file(manifest) if manifest.is_file() else "file missing"
    return record


@dataclass
class Provenance:
    """Per-notebook records and the environment of the latest run (see the module docstring)."""

    environment: dict[str, Any] = field(default_factory=dict)
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, executed_dir: str | os.PathLike) -> "Provenance":
        path = Path(executed_dir) / JSON_NAME
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data.get("environment", {}), data.get("notebooks", {}))

    def add(self, stem: str, record: dict[str, Any]) -> None:
        self.notebooks[stem] = record

    def forget(self, stem: str) -> None:
        self.notebooks.pop(stem, None)

    def keep_only(self, stems: Iterable[str]) -> None:
        """Drop the records of notebooks that are not in ``stems``, and order them like ``stems``."""
        self.notebooks = {s: self.notebooks[s] for s in stems if s in self.notebooks}

    def save(self, executed_dir: str | os.PathLike) -> None:
        executed_dir = Path(executed_dir)
        write_json(executed_dir / JSON_NAME, {"environment": self.environment, "notebooks": self.notebooks})
        (executed_dir / MARKDOWN_NAME).write_text(render_markdown(self), encoding="utf-8")


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def render_markdown(record: Provenance) -> str:
    """MyST markdown (``###`` headings and tables) for the reproducibility page."""
    env = record.environment
    lines = ["### Code and machine", "", "| | |", "|---|---|"]
    commit = env.get("commit") or "not a git checkout"
    dirty = {True: "yes", False: "no", None: "unknown (not a git checkout)"}[env.get("dirty")]
    for name, value in [("git commit", f"`{commit}`"), ("uncommitted changes", dirty),
                        ("Python", env.get("python")), ("platform", env.get("platform")),
                        ("CPU cores", env.get("cpus")), ("recorded", env.get("recorded_at"))]:
        lines.append(f"| {name} | {_cell(value)} |")

    lines += ["", "### Notebooks", ""]
    if not record.notebooks:
        lines.append("No notebook has been executed yet.")
    else:
        lines += ["| notebook | profile | seeds | manifest sha256 | commit | seconds |",
                  "|---|---|---|---|---|---|"]
        for stem, nb in record.notebooks.items():
            seeds = ", ".join(f"`{k}={v}`" for k, v in nb.get("seeds", {}).items()) or "none"
            commit = (nb.get("commit") or "n/a")[:10] + (" (dirty)" if nb.get("dirty") else "")
            lines.append(f"| {stem} | {nb['profile']} | {seeds} | `{nb.get('manifest_sha256', 'n/a')}` "
                         f"| `{commit}` | {nb['seconds']} |")
        lines += ["", "### Parameters", ""]
        for stem, nb in record.notebooks.items():
            values = ", ".join(f"`{k} = {v!r}`" for k, v in nb["parameters"].items())
            lines.append(f"- **{stem}** ({nb['profile']}): {values or 'none'}")

    lines += ["", "### Packages", "", "| package | version |", "|---|---|"]
    for name, version in sorted(env.get("packages", {}).items(), key=lambda kv: kv[0].lower()):
        lines.append(f"| {name} | {version} |")
    return "\n".join(lines) + "\n"
