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
#: modules that handle sample/rollout HDF5 files (eval/forecast_report.py still spells rollout
#: keys: it belongs to the eval-report branch; add it here once it takes them from h5layout)
H5_USERS = ("sample", "forecast", "eval/forecast.py", "eval/inputs.py")


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
