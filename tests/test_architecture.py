"""The package map of docs/architecture.md, enforced: which part of mhdsr may import which.

Every ``import``/``from ... import`` statement under src/mhdsr (module level and inside functions)
is read with ``ast`` and mapped to its *unit*: a subpackage (``train``, ``method``, ...) or a
top-level module (``mhdsr.config``). The rules:

* foundation modules (``errors``, ``config``, ``channels``, ``io_utils``, ``plots``,
  ``command``, ``units``) import only foundation modules;
* the shared layers import only the foundation and the shared layers listed for them in
  :data:`SHARED`;
* a stage (``shard_builder``, ``train``, ``sample``, ``eval``, ``forecast``) never imports
  another stage, the launcher or the root program;
* ``launch`` may import stages (it wraps their entry points), never the root program.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src" / "mhdsr"
FOUNDATION = {
    "mhdsr",
    "mhdsr.__version__",
    "mhdsr.errors",
    "mhdsr.config",
    "mhdsr.channels",
    "mhdsr.io_utils",
    "mhdsr.plots",
    "mhdsr.command",
    "mhdsr.units",
}
#: shared layer -> the other shared layers it may import
SHARED: dict[str, set[str]] = {
    "athenak": set(),
    "analysis": set(),
    "method": set(),
    "dataset": {"method"},
    "model": {"dataset", "method"},
    "runtime": {"method", "model", "dataset"},
}
STAGES = {"shard_builder", "train", "sample", "eval", "forecast"}
TOP = {"launch", "mhdsr.cli", "mhdsr.__main__"}


def unit(module: str, root: Path = SRC) -> str | None:
    """The unit of a dotted module name inside mhdsr (None outside the package); ``root`` is
    the package folder (a subpackage is a folder there)."""
    parts = module.split(".")
    if parts[0] != "mhdsr":
        return None
    if len(parts) == 1:
        return "mhdsr"
    return parts[1] if (root / parts[1]).is_dir() else f"mhdsr.{parts[1]}"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute mhdsr import in a file (also ``from m import x``
    as ``m.x``, so ``from mhdsr import config`` counts as ``mhdsr.config``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)]
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(ln, m) for ln, m in out if m.startswith("mhdsr")]


def allowed(src: str, dst: str) -> bool:
    """Whether unit ``src`` may import unit ``dst`` (see the module docstring)."""
    if dst == src or dst in FOUNDATION:
        return True
    if src in FOUNDATION:
        return False
    if src in SHARED:
        return dst in SHARED[src]
    if src in STAGES:
        return dst in SHARED
    if src == "launch":
        return dst in SHARED or dst in STAGES
    return src in TOP


def violations(root: Path) -> list[str]:
    bad = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root.parent).with_suffix("")
        mod = ".".join(rel.parts).removesuffix(".__init__")
        src = unit(mod, root)
        for line, m in imports_of(f):
            dst = unit(m, root)
            if dst is not None and not allowed(src, dst):
                bad.append(f"{f.relative_to(root.parent)}:{line}: {src} imports {dst}")
    return sorted(set(bad))


def test_every_unit_is_classified() -> None:
    units = {unit(".".join(("mhdsr", p.name.removesuffix(".py")))) for p in SRC.iterdir()}
    units -= {None, "mhdsr.__pycache__", "__pycache__"}
    known = FOUNDATION | set(SHARED) | STAGES | TOP | {"mhdsr.__init__"}
    assert units <= known, f"classify these in tests/test_architecture.py: {units - known}"


def test_no_forbidden_import() -> None:
    assert violations(SRC) == []


@pytest.mark.parametrize(
    ("src_file", "line", "why"),
    [
        ("train/bad.py", "from mhdsr.sample.bulk import run_sample", "train imports sample"),
        ("sample/bad.py", "from mhdsr.train.task import train", "sample imports train"),
        ("eval/bad.py", "import mhdsr.forecast.rollout", "eval imports forecast"),
        ("method/bad.py", "from mhdsr.runtime.loop import fit", "method imports runtime"),
        ("analysis/bad.py", "from mhdsr.eval import run", "analysis imports a stage"),
        ("config.py", "from mhdsr.method import interpolant", "foundation imports shared"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path: Path, src_file: str, line: str, why: str) -> None:
    fake = tmp_path / "mhdsr"
    for d in ("train", "sample", "eval", "forecast", "method", "runtime", "analysis"):
        (fake / d).mkdir(parents=True)
    (fake / src_file).write_text(f"def f():\n    {line}\n")  # an import inside a function counts
    found = violations(fake)
    assert len(found) == 1 and src_file in found[0], (why, found)


# --- loop rules ---

#: the training loop's main function: a reader follows it top to bottom (issue 18)
LOOP_MAX_LINES = 150


def test_the_loop_main_function_is_short() -> None:
    """``mhdsr.runtime.loop.fit`` (setup, resume, loop, summary) fits in 150 lines, docstring
    included; resume/save, monitoring and fault injection live in their own modules (the loop
    reads ``cfg.debug`` only to hand it to a :mod:`mhdsr.runtime.faults` hook)."""
    text = (SRC / "runtime" / "loop.py").read_text()
    fns = {n.name: n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)}
    fit = fns["fit"]
    n = fit.end_lineno - fit.lineno + 1
    assert n <= LOOP_MAX_LINES, f"runtime/loop.py: fit is {n} lines (at most {LOOP_MAX_LINES})"
    body = ast.get_source_segment(text, fit) or ""
    stray = [ln for ln in body.splitlines() if "cfg.debug" in ln and "faults." not in ln]
    assert stray == [], f"fault injection outside runtime/faults.py hooks: {stray}"
