"""The layers of the code, read from its imports (every ``import`` statement, those inside
functions included), as tests/unit/test_asyncapi.py reads the code for what it emits:

- the runtime (``workers.runtime``) imports no service and no operator tool;
- no service imports another service, an operator tool, an entry point;
- the operator tools and the entry points (``cli``, ``api``) use a service only through
  its public module (``workers/<service>/public.py``), never its rules or its tables;
- nothing outside ``cli/`` imports ``cli``;
- ``db`` imports only ``contracts``; ``contracts`` imports nothing of the fleet;
- the modules of one package import each other in no circle (neither could be read, or
  loaded, without the other).

The catalog names each service's handlers module as a string (it is loaded by name), which
is how the runtime runs services without importing them.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from workers.runtime.catalog import SERVICES

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("contracts", "db", "workers", "cli", "api", "tests", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files() -> Iterator[Path]:
    for top in TOP_LEVEL:
        yield from sorted((ROOT / top).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    source = path.read_text(encoding="utf-8")
    return imports_in(source, module_name(path), is_package=path.name == "__init__.py")


def imports_in(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, as absolute dotted names (relative ones resolved)."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            found.add(base)
            # `from workers.order import public` imports the module workers.order.public.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


IMPORTS = {module_name(path): imports_of(path) for path in python_files()}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def service_of(module: str) -> str | None:
    """The service whose package holds ``module``, if any."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "workers" and parts[1] in SERVICES:
        return parts[1]
    return None


def violations(rule: str) -> list[str]:
    found = []
    for module, imported in sorted(IMPORTS.items()):
        for target in sorted(imported):
            problem = RULES[rule](module, target)
            if problem:
                found.append(f"{module} imports {target}: {problem}")
    return found


def runtime_rule(module: str, target: str) -> str | None:
    if not within(module, "workers.runtime"):
        return None
    if service_of(target) or within(target, "workers.operations"):
        return "the runtime imports no service and no operator tool"
    if within(target, "cli") or within(target, "api"):
        return "the runtime imports no entry point"
    return None


def service_rule(module: str, target: str) -> str | None:
    owner = service_of(module)
    if owner is None:
        return None
    other = service_of(target)
    if other is not None and other != owner:
        return "a service shares only contracts with another service"
    if within(target, "workers.operations") or within(target, "cli") or within(target, "api"):
        return "a service imports no operator tool and no entry point"
    return None


def public_module_rule(module: str, target: str) -> str | None:
    user = within(module, "workers.operations") or within(module, "cli") or within(module, "api")
    owner = service_of(target)
    if not user or owner is None:
        return None
    if target == f"workers.{owner}" or within(target, f"workers.{owner}.public"):
        return None
    return f"use workers.{owner}.public, not the service's insides"


def cli_rule(module: str, target: str) -> str | None:
    if within(target, "cli") and not within(module, "cli"):
        return "nothing outside cli/ imports the CLI: it is an entry point, not a library"
    return None


def foundation_rule(module: str, target: str) -> str | None:
    fleet = {top for top in TOP_LEVEL}
    top = target.split(".")[0]
    if within(module, "contracts") and top in fleet - {"contracts"}:
        return "contracts import nothing of the fleet"
    if within(module, "db") and top in fleet - {"contracts", "db"}:
        return "db imports only contracts"
    return None


RULES = {
    "runtime": runtime_rule,
    "service": service_rule,
    "public module": public_module_rule,
    "cli": cli_rule,
    "foundation": foundation_rule,
}


@pytest.mark.parametrize("rule", RULES)
def test_the_layering_holds(rule: str) -> None:
    assert violations(rule) == []


def sibling_circle(imports: Mapping[str, set[str]]) -> list[str] | None:
    """A circle of imports among the modules of one package, if there is one. (A package's
    ``__init__`` is not one of its modules: ``from api import routes`` names it as well.)"""

    def package(module: str) -> str:
        return module.rpartition(".")[0]

    siblings = {
        module: {
            target
            for target in imported
            if target in imports and target != module and package(target) == package(module)
        }
        for module, imported in imports.items()
    }
    try:
        graphlib.TopologicalSorter(siblings).prepare()
    except graphlib.CycleError as error:
        circle: list[str] = error.args[1]
        return circle
    return None


def test_the_modules_of_a_package_import_each_other_in_no_circle() -> None:
    assert sibling_circle(IMPORTS) is None
    assert sibling_circle({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}}) is not None
    assert sibling_circle({"a": {"a.x"}, "a.x": {"a"}, "b.x": {"a.x"}}) is None


def test_the_reader_sees_every_package_and_their_imports() -> None:
    """The rules above check something: the modules and edges they judge are there."""
    assert "workers.runtime.consumer" in IMPORTS and "cli.main" in IMPORTS
    assert "workers.runtime.service" in IMPORTS["workers.runtime.consumer"]
    assert "workers.order.public" in IMPORTS["workers.operations.verify"]
    for service in SERVICES:
        assert f"workers.{service}.handlers" in IMPORTS
        assert f"workers.{service}.public" in IMPORTS, f"{service} has no public module"


@pytest.mark.parametrize(
    ("module", "target", "rule"),
    [
        ("workers.runtime.worker", "workers.order.handlers", "runtime"),
        ("workers.runtime.consumer", "workers.operations.verify", "runtime"),
        ("workers.payment.handlers", "workers.inventory.store", "service"),
        ("workers.payment.handlers", "workers.operations.seed", "service"),
        ("workers.operations.verify", "workers.inventory.store", "public module"),
        ("api.routes", "workers.order.domain", "public module"),
        ("workers.operations.load", "cli.output", "cli"),
        ("bench._support", "cli.db", "cli"),
        ("db.outbox", "workers.runtime.settings", "foundation"),
        ("contracts.base", "db.engine", "foundation"),
    ],
)
def test_each_rule_refuses_what_it_is_about(module: str, target: str, rule: str) -> None:
    assert RULES[rule](module, target) is not None


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("workers.operations.verify", "workers.order.public"),
        ("workers.order.handlers", "workers.order.domain"),
        ("workers.order.handlers", "workers.runtime.service"),
        ("cli.main", "cli.output"),
        ("tests.unit.test_order_domain", "workers.order.domain"),
    ],
)
def test_the_rules_let_the_allowed_through(module: str, target: str) -> None:
    assert all(rule(module, target) is None for rule in RULES.values())


def test_imports_are_read_wherever_they_stand_and_relative_ones_resolved() -> None:
    assert module_name(ROOT / "workers" / "order" / "public.py") == "workers.order.public"
    source = """
from . import domain
from ..runtime.topology import QueueSpec
import aio_pika

def later() -> None:
    from workers.inventory import store
"""
    assert imports_in(source, "workers.order.handlers") >= {
        "workers.order.domain",
        "workers.runtime.topology",
        "aio_pika",
        "workers.inventory.store",
    }
