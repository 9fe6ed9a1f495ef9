"""Run the study's notebooks with papermill, in book order, with the parameters of a profile.

Usage (from the project root, with the project's environment)::

    python -m sapsam_utils.report.runner                     # profile "default", every notebook
    python -m sapsam_utils.report.runner --profile smoke     # the CI profile
    python -m sapsam_utils.report.runner --only 02_segmentation --workdir work/mine

What it does, for each notebook chapter of ``_toc.yml`` (chapters named ``book/executed/<stem>``):

1. merges the ``common`` block and the ``<stem>`` block of ``notebooks/params/<profile>.yaml``
   (``--workdir`` overrides ``workdir``, ``--public-ct-root`` overrides ``public_ct_root``,
   ``--scheduler`` overrides ``scheduler``); a ``common`` setting goes to each notebook whose
   ``parameters`` cell defines it (``public_ct_root`` only to the chapters that read the public CT
   cases, ``scheduler`` only to those of the data half). It refuses a name of a notebook's block
   that its ``parameters`` cell does not define, and a ``common`` name that no notebook defines
   (a typo in a profile would otherwise be silently ignored), and a value whose type is not that
   of the parameter's default (a string for a number), naming the parameter;
2. executes ``notebooks/<stem>.ipynb`` with papermill, the project root as working folder, on the
   ``sapsam`` kernel (this interpreter: see :func:`ensure_kernel`);
3. on success: hides papermill's injected-parameters cell in the book (tag ``remove-cell``), adds a
   line saying which values this run used, and writes ``book/executed/<stem>.ipynb``;
4. on failure: stops, names the notebook and the failing cell, keeps the failed notebook at
   ``<workdir>/failed/<stem>.ipynb`` for inspection, removes ``book/executed/<stem>.ipynb`` (so no
   book can be rendered from a failed or stale notebook) and exits non-zero.

Afterwards it writes the provenance (:mod:`sapsam_utils.report.provenance`) and the paper-vs-reproduction
table (:mod:`sapsam_utils.report.summary`) that the book's last two pages include.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import nbformat
import yaml

from sapsam_utils.report import provenance, summary
from sapsam_utils.core.parallel import check_scheduler
from sapsam_utils.core.paths import project_path, project_root

#: Where executed notebooks go, relative to the root; ``_toc.yml`` chapters point here.
EXECUTED_DIR = "book/executed"
#: Kernel spec the runner installs into (and checks in) this environment.
KERNEL_NAME = "sapsam"
PROFILES = ("smoke", "default", "paper")


class RunnerError(RuntimeError):
    """A problem with the toc, a profile or the parameters (before any notebook runs)."""


class NotebookFailed(RuntimeError):
    """A notebook raised an error (or its kernel died) while papermill executed it."""

    def __init__(self, stem: str, cell: Any, ename: str, evalue: str, failed_copy: Path | None,
                 source: str = ""):
        self.stem, self.cell, self.ename, self.evalue, self.failed_copy = stem, cell, ename, evalue, failed_copy
        where = f"in cell [{cell}]" if cell is not None else "(no cell: the kernel or papermill failed)"
        first_line = source.strip().splitlines()[0] if source.strip() else ""
        if first_line:
            where += f" ({first_line[:80]})"
        text = f"notebook {stem} failed {where}: {ename}: {evalue}"
        if failed_copy is not None:
            text += f"\n  the executed notebook with the traceback: {failed_copy}"
        super().__init__(text)


def toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book ``_toc.yml`` (root first), in reading order."""
    if not toc_path.is_file():
        raise RunnerError(f"{toc_path}: no table of contents")
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8")) or {}
    files = [toc["root"]] if "root" in toc else []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return files


def toc_notebooks(root: Path) -> list[str]:
    """File stems of the notebook chapters of ``root/_toc.yml`` (entries under ``book/executed/``)."""
    prefix = EXECUTED_DIR + "/"
    stems = [Path(f).stem for f in toc_files(root / "_toc.yml") if f.startswith(prefix)]
    if not stems:
        raise RunnerError(f"{root / '_toc.yml'}: no chapter under {prefix}, so no notebook to run")
    return stems


def load_profile(root: Path, profile: str) -> dict[str, dict]:
    """The blocks of ``notebooks/params/<profile>.yaml`` (``common`` and one per notebook stem)."""
    path = root / "notebooks" / "params" / f"{profile}.yaml"
    if not path.is_file():
        raise RunnerError(f"{path}: no such profile (profiles: {', '.join(PROFILES)})")
    blocks = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for name, block in blocks.items():
        if not isinstance(block, dict):
            raise RunnerError(f"{path}: block '{name}' must be a mapping of parameter -> value")
    return blocks


def notebook_parameters(blocks: dict[str, dict], stem: str, workdir: str | None = None,
                        profile_name: str = "profile") -> dict[str, Any]:
    """``common`` merged with the notebook's block (the block wins), then the workdir override."""
    if stem not in blocks:
        raise RunnerError(f"{profile_name}: no block for notebook '{stem}' (write '{stem}: {{}}' for none)")
    params = {**blocks.get("common", {}), **blocks[stem]}
    if workdir is not None:
        params["workdir"] = workdir
    return params


def _kind(value: Any) -> str:
    """A value's type in words (as YAML writes it)."""
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                        ((list, tuple), "a list"), (dict, "a mapping")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _type_problem(value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand where the parameters cell has ``default``; None when it can.

    The value must have the default's type: a boolean, an integer (not a float), a number (an
    integer or a float), a string, a list (whose items have the type of the default's items when
    those all share one) or a mapping. ``null`` is accepted anywhere (several parameters use it for
    "none" or "all"), and so is anything where the default is ``None``.
    """
    if value is None or default is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return f"{_kind(value)} where the notebook expects {_kind(default)}"
        kinds = {_kind(d) for d in default}
        if len(kinds) == 1 and default[0] is not None:
            for index, item in enumerate(value):
                problem = _type_problem(item, default[0])
                if problem:
                    return f"item {index} is {item!r}: {problem}"
        return None
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        return None
    return None if ok else f"{_kind(value)} where the notebook expects {_kind(default)}"


def check_parameters(notebook: Path, params: dict[str, Any]) -> None:
    """Refuse parameters that the notebook's ``parameters`` cell does not define, or of another type.

    A value must have the type of the cell's default (:func:`_type_problem`), so that a string
    where a number belongs (``n_jobs: "2"``, or ``1e-3``, which YAML reads as a string) fails here,
    naming the parameter, not somewhere inside the notebook.
    """
    import ast

    import papermill

    known = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise RunnerError(
            f"{notebook}: the profile passes {unknown}, which its parameters cell does not define "
            f"(it defines {sorted(known)})"
        )
    for name, value in params.items():
        try:
            default = ast.literal_eval(known[name]["default"])
        except (ValueError, SyntaxError, TypeError):
            continue  # not a plain literal: nothing to compare with
        problem = _type_problem(value, default)
        if problem:
            raise RunnerError(
                f"{notebook}: parameter '{name}' is {value!r}, {problem} "
                f"(its default is {known[name]['default']})"
            )


def ensure_kernel() -> str:
    """Install the ``sapsam`` kernel spec for this interpreter into this environment, if needed.

    Returns the kernel name. A kernel spec of the same name elsewhere (e.g. a user-wide one for
    another Python) would take precedence, so the resolved spec is checked to run this interpreter.
    """
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def resolved_python() -> str | None:
        try:
            return KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0]
        except NoSuchKernel:
            return None

    if resolved_python() != sys.executable:
        install(kernel_name=KERNEL_NAME, display_name="Python (sapsam .venv)", prefix=sys.prefix)
    found = resolved_python()
    if found != sys.executable:
        raise RunnerError(
            f"kernel spec '{KERNEL_NAME}' runs {found}, not this environment's {sys.executable}: "
            f"remove the other spec (jupyter kernelspec remove {KERNEL_NAME})"
        )
    return KERNEL_NAME


def _parameters_note(profile: str, params: dict[str, Any]) -> nbformat.NotebookNode:
    values = ", ".join(f"`{name} = {value!r}`" for name, value in params.items())
    return nbformat.v4.new_markdown_cell(
        f"*This run (profile `{profile}`) set:* {values}. "
        "*The full provenance is on the reproducibility page.*"
    )


def prepare_for_book(nb: nbformat.NotebookNode, profile: str, params: dict[str, Any]) -> None:
    """Hide papermill's injected-parameters cell and say, in its place, which values were used."""
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags:
            if "remove-cell" not in tags:
                tags.append("remove-cell")
            nb.cells.insert(index + 1, _parameters_note(profile, params))
            return


def _write_atomic(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write a notebook through a temporary sibling (normal file mode), renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_notebook(root: Path, stem: str, profile: str, params: dict[str, Any], kernel: str) -> Path:
    """Execute ``notebooks/<stem>.ipynb``; write ``book/executed/<stem>.ipynb`` only on success.

    Raises
    ------
    NotebookFailed
        Naming the notebook and the failing cell; ``book/executed/<stem>.ipynb`` is then removed.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = root / "notebooks" / f"{stem}.ipynb"
    executed = root / EXECUTED_DIR / f"{stem}.ipynb"

    with tempfile.TemporaryDirectory(prefix=f"sapsam-{stem}-") as tmp:
        output = Path(tmp) / f"{stem}.ipynb"
        try:
            papermill.execute_notebook(
                str(source), str(output), parameters=params, kernel_name=kernel,
                cwd=str(root), progress_bar=False, log_output=False,
            )
        except Exception as error:
            executed.unlink(missing_ok=True)
            failed_copy = None
            if output.is_file():
                failed_copy = project_path(params.get("workdir", "work")) / "failed" / f"{stem}.ipynb"
                _write_atomic(nbformat.read(output, as_version=4), failed_copy)
            if isinstance(error, PapermillExecutionError):
                raise NotebookFailed(stem, error.exec_count, error.ename, error.evalue, failed_copy,
                                     error.source) from None
            raise NotebookFailed(stem, None, type(error).__name__, str(error), failed_copy) from error
        nb = nbformat.read(output, as_version=4)
    prepare_for_book(nb, profile, params)
    _write_atomic(nb, executed)
    return executed


def plan_run(root: Path, profile: str, workdir: str | None = None,
             only: Iterable[str] | None = None, public_ct_root: str | None = None,
             scheduler: str | None = None) -> dict[str, dict[str, Any]]:
    """The notebooks to run, in toc order, with their parameters, all checked before any runs.

    A ``common`` setting goes to the notebooks whose parameters cell defines it; ``public_ct_root``
    and ``scheduler`` (when given) replace the profile's values in each of those.

    Raises
    ------
    RunnerError
        For an ``only`` stem that is not a chapter, a missing notebook or profile block, a
        parameter of a notebook's block that the notebook does not define, or a ``common`` one
        that no notebook defines, or a ``scheduler`` that is neither a local engine nor a Dask
        address — so that a typo fails in seconds, not after the notebooks before it have run.
    """
    import papermill

    overrides = {k: v for k, v in (("public_ct_root", public_ct_root), ("scheduler", scheduler)) if v is not None}

    chapters = toc_notebooks(root)
    stems = chapters
    if only:
        only = list(only)
        missing = sorted(set(only) - set(stems))
        if missing:
            raise RunnerError(f"--only {missing}: not notebook chapters of _toc.yml ({stems})")
        stems = [s for s in stems if s in only]
    blocks = load_profile(root, profile)
    name = f"notebooks/params/{profile}.yaml"
    known = {}
    for stem in chapters:
        source = root / "notebooks" / f"{stem}.ipynb"
        if stem in stems and not source.is_file():
            raise RunnerError(f"{source}: _toc.yml lists chapter '{stem}' but the notebook does not exist")
        known[stem] = set(papermill.inspect_notebook(str(source))) if source.is_file() else set()
    common = {**blocks.get("common", {}), **overrides}
    try:
        check_scheduler(common.get("scheduler", "processes"))
    except (ValueError, ImportError) as err:
        raise RunnerError(f"{name}: {err}") from err
    unused = sorted(k for k in common if not any(k in known[s] for s in chapters))
    if unused:
        raise RunnerError(f"{name}: the common block passes {unused}, which no notebook's parameters cell defines")
    plan = {}
    for stem in stems:
        params = {**notebook_parameters(blocks, stem, workdir, name), **overrides}
        own = set(blocks.get(stem, {})) | {"workdir"}
        plan[stem] = {k: v for k, v in params.items() if k in known[stem] or k in own or k not in common}
        check_parameters(root / "notebooks" / f"{stem}.ipynb", plan[stem])
    return plan


def run(root: Path, profile: str, workdir: str | None = None, only: Iterable[str] | None = None,
        log=print, public_ct_root: str | None = None, scheduler: str | None = None) -> list[str]:
    """Run the notebooks of ``root/_toc.yml`` (or the ``only`` subset, in toc order).

    Returns the stems that ran. Writes ``book/executed/provenance.{json,md}`` and
    ``book/executed/summary.md`` after the last notebook, and after a failure too (minus the
    failed notebook), so they always describe the executed notebooks that exist.
    """
    root = Path(root).resolve()
    plan = plan_run(root, profile, workdir, only, public_ct_root, scheduler)
    stems = list(plan)
    kernel = ensure_kernel()
    executed_dir = root / EXECUTED_DIR
    record = provenance.Provenance.load(executed_dir)
    # The code that runs is this project's (sapsam_utils and the notebooks beside it), so its
    # git state is recorded even when --root points at a copy of the book's sources.
    record.environment = provenance.environment(project_root())
    try:
        for stem in stems:
            params = plan[stem]
            log(f"[runner] {stem}: running with profile {profile} ({params})")
            started = time.time()
            try:
                run_notebook(root, stem, profile, params, kernel)
            except NotebookFailed:
                record.forget(stem)
                raise
            seconds = time.time() - started
            record.add(stem, provenance.notebook_record(project_root(), profile, params, started, seconds))
            log(f"[runner] {stem}: done in {seconds:.1f} s")
    finally:
        record.keep_only(s for s in toc_notebooks(root) if (executed_dir / f"{s}.ipynb").is_file())
        record.save(executed_dir)
        summary.write_summary(root, record, executed_dir / "summary.md")
    return stems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sapsam_utils.report.runner",
        description="Execute the study's notebooks with papermill in _toc.yml order, for the book.",
    )
    parser.add_argument("--profile", default="default",
                        help="parameter profile: notebooks/params/<profile>.yaml (smoke, default, paper)")
    parser.add_argument("--workdir", help="override the profile's workdir (relative to the root)")
    parser.add_argument("--public-ct-root", metavar="DIR",
                        help="folder of the public CT cases (overrides the profile's public_ct_root; "
                             "relative to the root); a folder without them builds the book without them")
    parser.add_argument("--scheduler", metavar="ENGINE",
                        help="how the data half (chapters 1-3) runs its per-scan jobs: processes (local, the "
                             "default), dask (a local Dask cluster) or a Dask scheduler's address tcp://host:port "
                             "(overrides the profile's scheduler)")
    parser.add_argument("--only", nargs="+", metavar="STEM",
                        help="run only these notebooks (file stems, e.g. 02_segmentation)")
    parser.add_argument("--root", default=None,
                        help="project root holding _toc.yml, notebooks/ and book/ (default: this project)")
    args = parser.parse_args(argv)

    root = Path(args.root) if args.root else project_root()
    try:
        stems = run(root, args.profile, args.workdir, args.only, public_ct_root=args.public_ct_root,
                    scheduler=args.scheduler)
    except (RunnerError, NotebookFailed) as error:
        print(f"[runner] FAILED: {error}", file=sys.stderr)
        return 1
    print(f"[runner] {len(stems)} notebook(s) executed into {root / EXECUTED_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
