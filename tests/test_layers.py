"""The tree shows the design: a plain library that knows nothing of Ray, one Ray layer (``ray_sbir.distributed``)
plus Serve's deployments and app builder, and no import cycle between ray_sbir's modules -- function-level
imports included (read from the source, so a lazy import cannot hide one)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ray_sbir"
RAY_ALLOWED = ("ray_sbir.distributed", "ray_sbir.serving.deployments", "ray_sbir.serving.app",
               "ray_sbir.serving.metrics", "ray_sbir.testing.serve", "ray_sbir.testing.autoscale")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 530, 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module (of ray_sbir or outside it) ``name`` imports anywhere in its source."""

    def resolve(dotted: str) -> str:
        while dotted.startswith("ray_sbir") and dotted not in modules and "." in dotted:
            dotted = dotted.rsplit(".", 1)[0]
        return dotted

    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:  # `from pkg import submodule` imports the submodule
                full = f"{base}.{a.name}"
                found.add(full if full in modules else resolve(base))
    found.discard(name)
    return found


def test_no_import_cycle_between_modules():
    modules = _modules()
    graph = {m: {d for d in _imports(m, p, modules) if d in modules} for m, p in modules.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_ray_is_imported_only_by_the_ray_layer_and_serves_deployments():
    modules = _modules()
    offenders = sorted(m for m, p in modules.items() if not m.startswith(RAY_ALLOWED)
                       and any(d == "ray" or d.startswith("ray.") for d in _imports(m, p, modules)))
    assert not offenders, f"modules of the plain library importing ray: {offenders}"


def test_no_module_or_function_too_long():
    too_long = []
    for name, path in _modules().items():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


def test_only_tests_and_benches_use_the_testing_package_and_no_bench_imports_tests():
    """``ray_sbir.testing`` serves the tests and the benches; the library proper never imports it, and the benches
    take what they share with the tests from it, never from ``tests/``."""
    modules = _modules()
    users = sorted(m for m, p in modules.items() if not m.startswith("ray_sbir.testing")
                   and any(d.startswith("ray_sbir.testing") for d in _imports(m, p, modules)))
    assert not users, f"library modules importing ray_sbir.testing: {users}"
    benches = PACKAGE.parent / "bench"
    offenders = sorted(p.name for p in benches.glob("*.py")
                       if any(d == "tests" or d.startswith("tests.") for d in _imports(p.stem, p, modules)))
    assert not offenders, f"benches importing from tests/: {offenders}"
