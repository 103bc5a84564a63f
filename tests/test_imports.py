"""The import graph of bench/: no cycles, counting imports inside functions; a
function-local import of a bench module only where it defers a heavy optional
dependency (marked `# deferred: why` on the line above); bench.cli imported
only by the process entry."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFER_MARK = "# deferred:"
# who may import the command line: the process entry (run_bench.py, python -m bench)
CLI_IMPORTERS = {"bench.entry"}


def modules(root: str, package: str) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(os.path.join(root, package)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imports(root: str, package: str) -> list[tuple[str, str, int, bool]]:
    """(importer, imported module, line, inside a function) for every import of a
    module of `package`; `from . import x` counts as importing x where x is a module."""
    mods = modules(root, package)
    found = []
    for name, path in mods.items():
        tree = ast.parse(open(path).read(), path)
        pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                          ast.Lambda))
                targets = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = (".".join(pkg.split(".")[:len(pkg.split(".")) - child.level + 1])
                            if child.level else "")
                    mod = ".".join(p for p in (base, child.module) if p)
                    subs = [f"{mod}.{a.name}" for a in child.names if f"{mod}.{a.name}" in mods]
                    targets = subs if subs and len(subs) == len(child.names) else [mod] + subs
                for t in targets:
                    if t in mods and t != name:
                        found.append((name, t, child.lineno, in_function))
                visit(child, inner)
        visit(tree, False)
    return found


def find_cycle(edges: list[tuple[str, str]]) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(v):
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                cycle = dfs(w)
                if cycle:
                    return cycle
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            cycle = dfs(v)
            if cycle:
                return cycle
    return None


def undeferred_local_imports(root: str, package: str) -> list[str]:
    bad = []
    for importer, target, line, local in imports(root, package):
        if not local:
            continue
        lines = open(modules(root, package)[importer]).read().splitlines()
        above = lines[line - 2].strip() if line >= 2 else ""
        if not above.startswith(DEFER_MARK):
            bad.append(f"{importer}:{line} imports {target} inside a function")
    return bad


def dynamic_edges() -> list[tuple[str, str]]:
    """bench.commands loads each subcommand's module by name (importlib): edges too."""
    from bench.subcommands import SUBCOMMANDS
    return [("bench.commands", module) for module, _summary in SUBCOMMANDS.values()]


def importers_of(root: str, package: str, target: str) -> set[str]:
    return {a for a, b, _line, _local in imports(root, package) if b == target}


def test_bench_has_no_import_cycle():
    edges = [(a, b) for a, b, _line, _local in imports(REPO, "bench")] + dynamic_edges()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_subcommand_module_exists():
    mods = modules(REPO, "bench")
    assert all(module in mods for _a, module in dynamic_edges()), dynamic_edges()


def test_function_local_imports_only_defer_heavy_dependencies():
    assert undeferred_local_imports(REPO, "bench") == []


def test_only_the_entry_imports_the_command_line():
    importers = importers_of(REPO, "bench", "bench.cli")
    assert importers <= CLI_IMPORTERS, importers - CLI_IMPORTERS


CLI_MAX_LINES = 300


def lines_of(path: str) -> int:
    with open(path) as f:
        return len(f.read().splitlines())


def test_the_command_line_stays_small():
    assert lines_of(os.path.join(REPO, "bench", "cli.py")) <= CLI_MAX_LINES


# --- the checker itself catches what it is for ----------------------------------

def _package(tmp_path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("b_text", [
    "from . import a\n",                                 # module level
    "def f():\n    from .a import X\n    return X\n",    # hidden inside a function
    "from .sub import c\n",                              # through a subpackage
])
def test_a_cycle_is_found(tmp_path, b_text):
    root = _package(tmp_path, {"__init__.py": "", "a.py": "from . import b\nX = 1\n", "b.py": b_text,
                               "sub/__init__.py": "", "sub/c.py": "from .. import a\n"})
    edges = [(x, y) for x, y, _l, _local in imports(root, "pkg")]
    assert find_cycle(edges) is not None, edges


def test_an_acyclic_package_passes(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "a.py": "from . import b\n", "b.py": "import os\n"})
    assert find_cycle([(x, y) for x, y, _l, _local in imports(root, "pkg")]) is None


def test_an_unmarked_local_import_is_found(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "a.py": "def f():\n    from . import b\n",
                               "b.py": "",
                               "c.py": "def g():\n    # deferred: b is heavy\n    from . import b\n"})
    assert undeferred_local_imports(root, "pkg") == ["pkg.a:2 imports pkg.b inside a function"]


def test_another_importer_of_the_command_line_is_found(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "cli.py": "", "entry.py": "from . import cli\n",
                               "sweep.py": "def f():\n    from .cli import main\n"})
    assert importers_of(root, "pkg", "pkg.cli") == {"pkg.entry", "pkg.sweep"}


def test_a_long_command_line_is_found(tmp_path):
    path = tmp_path / "cli.py"
    path.write_text("x = 1\n" * (CLI_MAX_LINES + 1))
    assert lines_of(str(path)) > CLI_MAX_LINES
