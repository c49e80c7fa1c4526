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
        ("config.py", "from mhdsr.method import grid", "foundation imports shared"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path: Path, src_file: str, line: str, why: str) -> None:
    fake = tmp_path / "mhdsr"
    for d in ("train", "sample", "eval", "forecast", "method", "runtime", "analysis"):
        (fake / d).mkdir(parents=True)
    (fake / src_file).write_text(f"def f():\n    {line}\n")  # an import inside a function counts
    found = violations(fake)
    assert len(found) == 1 and src_file in found[0], (why, found)


# --- method rules ---

#: method fields a shipped train config may size for its own budget (the default is the value
#: the CPU configs use; the MethodConfig docstring says so)
PER_CONFIG_METHOD_FIELDS = {"residual_samples"}


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "train").glob("*.yaml")), ids=str)
def test_method_defaults_are_the_shipped_method(path: Path) -> None:
    """``MethodConfig()`` is the method section of every shipped train config: merged onto the
    defaults, the section changes no field but the per-config ones."""
    import dataclasses

    from omegaconf import OmegaConf

    from mhdsr.config import from_dict
    from mhdsr.method.config import MethodConfig

    section = OmegaConf.to_container(OmegaConf.load(path)).get("method")  # type: ignore[union-attr]
    assert isinstance(section, dict) and section, f"{path.name} has no method section"
    shipped = from_dict(MethodConfig, section)
    default = MethodConfig()
    diff = {
        f.name: (getattr(shipped, f.name), getattr(default, f.name))
        for f in dataclasses.fields(MethodConfig)
        if getattr(shipped, f.name) != getattr(default, f.name)
    }
    assert set(diff) <= PER_CONFIG_METHOD_FIELDS, f"{path.name}: (shipped, default) {diff}"


# --- cycle rules ---


def _module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: the module body and the ``if`` /
    ``try`` / ``with`` blocks in it (``if TYPE_CHECKING:`` included), not function or class
    bodies."""
    out: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody"):
                todo += getattr(node, block, [])
            for h in getattr(node, "handlers", []):
                todo += h.body
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the mhdsr modules it imports at module level (absolute and relative imports;
    ``from pkg import mod`` counts as ``pkg.mod`` when that is a module, else as ``pkg``)."""
    files = {_module_name(f, root): f for f in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for mod, f in files.items():
        pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in _top_level_imports(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
                continue
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                deps.add(full if full in files else base)
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:  # a shortest path back to the first module, for the message
        start, members = comp[0], set(comp)
        prev: dict[str, str] = {}
        todo = [start]
        while todo and start not in prev:
            v = todo.pop(0)
            for w in sorted(graph[v] & members):
                if w not in prev:
                    prev[w] = v
                    todo.append(w)
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append(path[::-1])
    return cycles


def test_no_module_level_import_cycle() -> None:
    cycles = import_cycles(import_graph(SRC))
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_an_import_cycle_is_caught(tmp_path: Path) -> None:
    fake = tmp_path / "mhdsr"
    (fake / "eval").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "eval" / "__init__.py").write_text("")
    (fake / "eval" / "a.py").write_text("from .b import x\n")
    (fake / "eval" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mhdsr.eval import a\nx = 1\n"
    )
    (fake / "eval" / "c.py").write_text("def f():\n    from mhdsr.eval import a\n")  # in a function
    assert import_cycles(import_graph(fake)) == [["mhdsr.eval.a", "mhdsr.eval.b", "mhdsr.eval.a"]]


# --- format rules ---
#: the one module that reads shard tars, and the one that names the HDF5 output layouts
SHARD_READER = SRC / "dataset" / "shards.py"
H5_LAYOUT = SRC / "dataset" / "h5layout.py"
#: the builder writes shards (webdataset's TarWriter), it never reads them
SHARD_WRITER = SRC / "shard_builder" / "worker.py"
#: dataset keys of sample and rollout files (written as string literals only in H5_LAYOUT)
H5_KEYS = {
    "samples", "input", "snapshot", "cycle", "init_index", "forecast", "truth",
    "truth_snapshot", "lead_orbits", "init", "init_snapshot", "init_time", "init_cycle",
    "prev", "prev_snapshot", "complete", "settings",
}  # fmt: skip
#: packages that handle sample/rollout HDF5 files
H5_USERS = ("sample", "forecast", "eval")


def tar_readers(root: Path) -> list[str]:
    """``file:line`` of every shard read outside :data:`SHARD_READER`: a ``tarfile.open`` call
    (or ``tarfile.TarFile``), or a webdataset import other than the builder's writer."""
    bad = []
    for f in sorted(root.rglob("*.py")):
        if f == root / SHARD_READER.relative_to(SRC):
            continue
        writer = f == root / SHARD_WRITER.relative_to(SRC)
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            where = f"{f.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and node.attr in ("open", "TarFile"):
                if isinstance(node.value, ast.Name) and node.value.id == "tarfile":
                    bad.append(where)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("webdataset"):
                if not (writer and node.module == "webdataset.writer"):
                    bad.append(where)
            elif isinstance(node, ast.Import) and any(
                a.name.startswith("webdataset") for a in node.names
            ):
                bad.append(where)
    return bad


def _h5_handle(node: ast.AST) -> bool:
    """An expression that names an open HDF5 file or its attributes by this code base's
    convention: ``f``, ``h5``, ``fh``, ``<x>.f`` or ``<x>.attrs``."""
    if isinstance(node, ast.Name):
        return node.id in ("f", "h5", "fh")
    return isinstance(node, ast.Attribute) and node.attr in ("f", "attrs")


def h5_layout_spellings(root: Path) -> list[str]:
    """``file:line`` of HDF5 layout names spelled outside :data:`H5_LAYOUT`: a definition of
    ``output_path``/``read_settings``/``stale_tmps`` anywhere, or a layout key as a literal
    subscript of a file handle (``f["forecast"]``, see :func:`_h5_handle`), attribute
    (``f.attrs["complete"]``, ``f.attrs.get("settings")``) or dataset name
    (``create_dataset("samples", ...)``) in :data:`H5_USERS`."""
    bad = []
    layout = root / H5_LAYOUT.relative_to(SRC)
    for f in sorted(root.rglob("*.py")):
        if f == layout:
            continue
        rel = str(f.relative_to(root))
        user = any(rel == u or rel.startswith(u + "/") for u in H5_USERS)
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            where = f"{f.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.FunctionDef) and node.name in (
                "output_path",
                "read_settings",
                "stale_tmps",
            ):
                bad.append(where)
            if not user:
                continue
            keys: list[ast.AST] = []
            if isinstance(node, ast.Subscript) and _h5_handle(node.value):
                keys = [node.slice]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                fn = node.func
                if fn.attr in ("create_dataset", "require_dataset") or (
                    fn.attr == "get" and _h5_handle(fn.value) and not isinstance(fn.value, ast.Name)
                ):
                    keys = [node.args[0]]
            if any(isinstance(k, ast.Constant) and k.value in H5_KEYS for k in keys):
                bad.append(where)
    return bad


def test_only_dataset_reads_shard_tars() -> None:
    assert tar_readers(SRC) == []


def test_only_the_layout_module_spells_hdf5_layouts() -> None:
    assert h5_layout_spellings(SRC) == []


@pytest.mark.parametrize(
    ("src_file", "code", "rule"),
    [
        ("eval/bad.py", "import tarfile\nt = tarfile.open('x.tar')\n", tar_readers),
        ("sample/bad.py", "from webdataset import WebDataset\n", tar_readers),
        ("shard_builder/bad.py", "import webdataset as wds\n", tar_readers),
        ("forecast/bad.py", "def g(f):\n    return f['forecast'][0]\n", h5_layout_spellings),
        (
            "sample/bad.py",
            "def f(h):\n    h.create_dataset('samples', (1,))\n",
            h5_layout_spellings,
        ),
        (
            "eval/forecast.py",
            "def f(h):\n    return h.attrs.get('complete')\n",
            h5_layout_spellings,
        ),
        ("train/bad.py", "def output_path(d, s):\n    return d\n", h5_layout_spellings),
    ],
)
def test_a_format_rule_violation_is_caught(tmp_path: Path, src_file: str, code: str, rule) -> None:
    fake = tmp_path / "mhdsr"
    (fake / src_file).parent.mkdir(parents=True)
    (fake / src_file).write_text(code)
    found = rule(fake)
    assert len(found) == 1 and src_file in found[0], found


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
