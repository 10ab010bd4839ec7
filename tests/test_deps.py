"""The architecture, checked: stages import library code and never each other, every DVC stage lists
exactly the project modules its command imports (the ast closure), and package __init__ files hold
no code. `python tests/test_deps.py` prints the deps each stage should list; `--write` puts them in
the dvc.yaml files (other deps, comments and order of stages are kept)."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline",)  # stages, and the libraries in its subpackages
DVC_FILES = ("dvc.yaml", "sweeps/dvc.yaml")
MODULE_RE = re.compile(
    r"(?:python|\$\{\w+\.launcher\}) -m (pipeline\.\w+)"
)  # launcher: python, torchrun, accelerate


def module_file(name: str) -> Path | None:
    """The project file a dotted name refers to (a package's __init__ is not a dependency of note)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def direct_imports(path: Path) -> set[str]:
    """Project modules a file imports, at top level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n.split(".")[0] in PACKAGES and module_file(n)}
    return out


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += direct_imports(module_file(m))
    return seen


def stage_modules() -> set[str]:
    return {f"pipeline.{p.stem}" for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__"}


def sweep_runs() -> tuple:
    sys.path.insert(0, str(ROOT))
    from pipeline.core.schema import SWEEP_STAGES

    return SWEEP_STAGES


def expected_deps(cmd: str) -> set[str]:
    """Files a stage's command runs: its module's closure; a full sweep point also runs the point's
    stages, each in a subprocess."""
    module = MODULE_RE.search(cmd).group(1)
    mods = closure(module)
    if module == "pipeline.sweep" and "--params-only" not in cmd:
        for stage in sweep_runs():
            mods |= closure(f"pipeline.{stage}")
    files = {str(module_file(m).relative_to(ROOT)) for m in mods}
    if "pipeline/core/schema.py" in files:  # the schema reads every key's default from this file
        files.add("pipeline/core/defaults.yaml")
    return files


def dvc_stages():
    for rel in DVC_FILES:
        doc = yaml.safe_load((ROOT / rel).read_text())
        for name, st in doc["stages"].items():
            st = st.get("do", st)
            if not MODULE_RE.search(st["cmd"]):
                continue
            wdir = ((ROOT / rel).parent / st.get("wdir", ".")).resolve()
            deps = [str((wdir / d).resolve().relative_to(ROOT)) for d in st.get("deps", []) if "${" not in d]
            # a whole package as a dep hides which modules the stage runs: list modules
            listed = {d for d in deps if d.endswith((".py", "defaults.yaml")) or d in PACKAGES}
            yield f"{rel}:{name}", st["cmd"], listed


@pytest.mark.parametrize("where,cmd,listed", list(dvc_stages()), ids=lambda v: v if ":" in str(v) else "")
def test_dvc_deps_equal_the_import_closure(where, cmd, listed):
    want = expected_deps(cmd)
    assert listed == want, f"{where}: missing {sorted(want - listed)}, not imported {sorted(listed - want)}"


def test_no_stage_imports_another_stage():
    stages = stage_modules()
    bad = {s: sorted(direct_imports(module_file(s)) & stages) for s in stages}
    assert not {s: v for s, v in bad.items() if v}


def test_library_never_imports_a_stage():
    stages = stage_modules()
    lib = [
        p
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if f"pipeline.{p.stem}" not in stages or p.parent != ROOT / "pipeline"
    ]
    bad = {str(p.relative_to(ROOT)): sorted(direct_imports(p) & stages) for p in lib}
    assert not {k: v for k, v in bad.items() if v}


def test_init_files_hold_only_a_docstring():
    for init in [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")]:
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), (
            init
        )


def test_closure_follows_function_level_and_package_imports(tmp_path):
    # pipeline.prune imports the INC adapter inside main(), through `from pipeline.training import ...`
    assert {"pipeline.training.inc", "pipeline.training.student", "pipeline.core.params"} <= closure(
        "pipeline.prune"
    )
    assert "pipeline.training.inc" not in closure("pipeline.export")


def rewrite(rel: str) -> None:
    """Replace the module deps of every `python -m pipeline.*` stage in one dvc.yaml with its closure."""
    path = ROOT / rel
    stages = yaml.safe_load(path.read_text())["stages"]
    cmds = {n: s.get("do", s)["cmd"] for n, s in stages.items() if MODULE_RE.search(s.get("do", s)["cmd"])}
    out, stage, want = [], None, None
    for line in path.read_text().splitlines():
        if (m := re.match(r"^  (\w+):", line)) and m.group(1) in stages:
            stage = m.group(1)
        item = re.match(r"^(\s+)- (\S+)", line)
        if re.match(r"^\s+deps:", line) and stage in cmds:
            want = sorted(expected_deps(cmds[stage]))
        elif want is not None and item:
            out += [f"{item.group(1)}- {w}" for w in want]
            want = []
        elif want is not None and not item:
            want = None
        if not (
            item
            and want is not None
            and (item.group(2).endswith((".py", "defaults.yaml")) or item.group(2) in PACKAGES)
        ):
            out.append(line)
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    if "--write" in sys.argv:
        for rel in DVC_FILES:
            rewrite(rel)
    for where, cmd, listed in dvc_stages():
        print(f"{where}:", *sorted(expected_deps(cmd)), sep="\n  - ")
