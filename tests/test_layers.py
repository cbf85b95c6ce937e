"""Guards for the shape of the code: layers point one way, and one module writes task status.

stores (blobs, codecs, payloads, records, logs, tasks/) <- the facade (hub.py) <- applications
(runner/, cli.py). A lower layer never imports a higher one, not even inside a function.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tensorhub"
FACADE = {"tensorhub.hub"}
APPLICATIONS = {"tensorhub.runner", "tensorhub.cli"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(under: str) -> list[Path]:
    return sorted((PACKAGE / under).rglob("*.py")) if under else sorted(PACKAGE.glob("*.py"))


def reaches(imported: set[str], targets: set[str]) -> set[str]:
    return {name for name in imported for target in targets if name == target or name.startswith(target + ".")}


def test_the_task_package_never_imports_the_facade_or_an_application():
    for path in modules("tasks"):
        assert not reaches(imports_of(path), FACADE | APPLICATIONS), path.name


def test_stores_never_import_the_facade_or_an_application():
    stores = [p for p in modules("") if p.stem not in ("hub", "cli", "__init__")] + modules("codecs")
    for path in stores:
        assert not reaches(imports_of(path), FACADE | APPLICATIONS), path.name


def test_the_facade_never_imports_an_application():
    assert not reaches(imports_of(PACKAGE / "hub.py"), APPLICATIONS)


def test_only_the_state_machine_writes_status():
    """A "$set"/"$setOnInsert" with a "status" key outside states.py would be a second writer of
    task status (reading it, {"status": PENDING} in a query, is fine). New tasks get theirs from
    states.initial() (see the next test)."""
    offenders = []
    # Runs and runners have a status of their own, written by the stores that own them.
    own_status = {"states.py", "store.py", "fleet.py"}
    for path in modules("") + modules("tasks") + modules("runner") + modules("codecs") + modules("runs"):
        if path.name in own_status:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Dict):
                continue
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if any(k in ("$set", "$setOnInsert") for k in keys):
                for value in node.values:
                    if isinstance(value, ast.Dict) and any(
                            isinstance(k, ast.Constant) and k.value == "status" for k in value.keys):
                        offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_status_writer_is_the_transition_function():
    source = (PACKAGE / "tasks" / "states.py").read_text()
    assert '"$set": {"status": target' in source and 'return {"status": PENDING}' in source


def test_public_api_is_small_and_documented():
    import tensorhub
    from tensorhub import TensorHub

    public = [name for name in dir(TensorHub) if not name.startswith("_")]
    undocumented = [name for name in public if not (getattr(TensorHub, name).__doc__ or "").strip()
                    and not isinstance(getattr(TensorHub, name), property)]
    assert undocumented == [], undocumented
    assert not {"tasks", "blobs", "datasets", "models", "logs"} & set(vars(TensorHub(
        "mongomock://localhost/layers_test")))
    assert set(tensorhub.__all__) >= {"TensorHub", "Record", "Task", "current_task", "errors"}


DASHBOARD = "tensorhub.dashboard"


def test_nothing_outside_the_dashboard_imports_it_but_the_cli_command_lazily():
    """The dashboard is an application behind an extra (Flask, waitress): the core never needs it."""
    outside = [p for p in PACKAGE.rglob("*.py") if "dashboard" not in p.relative_to(PACKAGE).parts]
    for path in outside:
        if path.name == "cli.py":
            continue
        assert not reaches(imports_of(path), {DASHBOARD}), path.name
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    lazy = {id(node) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) and fn.name == "dashboard"
            for node in ast.walk(fn)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(DASHBOARD):
            assert id(node) in lazy, f"cli.py:{node.lineno} imports the dashboard outside its command"


def test_the_dashboard_reads_through_the_facade_not_the_stores():
    """Page data comes from TensorHub's public methods; only constants and errors come from below."""
    allowed = {"tensorhub.errors", "tensorhub.fields", "tensorhub.tasks.states", "tensorhub.connection"}
    for path in modules("dashboard"):
        own = {name for name in imports_of(path) if name.startswith("tensorhub") and not name.startswith(DASHBOARD)}
        assert {name for name in own if not any(name == a or name.startswith(a + ".") for a in allowed)} == set(), \
            path.name
        source = path.read_text()
        assert ".db[" not in source and "._tasks" not in source and "._runs" not in source, path.name
