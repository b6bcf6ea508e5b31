"""Each of the paper's equations lives in exactly one function, the one engine/tailor's table names.

A function implementing equation N says so with "Eq. N:" in the first line of its docstring; the table in
`engine.tailor`'s docstring lists them. Every function docstring of engine/ is read (without importing).
"""

import ast
import importlib
import pathlib
import re

import engine.tailor

ENGINE = pathlib.Path(engine.tailor.__file__).resolve().parents[1]
REQUIRED = {"4", "5", "9", "10", "11", "12", "13", "14", "15", "16", "17", "P1", "P2", "P3", "P4", "P5", "P6"}
MARK = re.compile(r"\bEq\. (P?\d+):")  # the paper's equations by number, the project's own as P1, P2, ...


def table() -> dict[str, str]:
    rows = re.findall(r"^\| (P?\d+) \|.*\| (engine\.[\w.]+) \|$", engine.tailor.__doc__, re.M)
    return {n: path for n, path in rows}


def marked() -> dict[str, list[str]]:
    """Equation -> the functions whose docstring's first line carries its "Eq. N:" mark."""
    out: dict[int, list[str]] = {}
    for path in sorted(ENGINE.rglob("*.py")):
        module = ".".join(path.relative_to(ENGINE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = (ast.get_docstring(node) or "").split("\n")[0]
                for n in MARK.findall(doc):
                    out.setdefault(n, []).append(f"{module}.{node.name}")
    return out


def test_every_equation_is_in_the_table_once():
    rows = table()
    assert REQUIRED <= set(rows), f"missing from the table: {sorted(REQUIRED - set(rows))}"
    found = marked()
    for n, path in rows.items():
        assert found.get(n) == [path], f"Eq. {n}: the table says {path}, the docstrings mark {found.get(n)}"
    assert set(found) <= set(rows), f"marked but not in the table: {sorted(set(found) - set(rows))}"


def test_the_table_names_real_functions():
    for n, path in table().items():
        module, name = path.rsplit(".", 1)
        fn = getattr(importlib.import_module(module), name)
        assert f"Eq. {n}:" in fn.__doc__.split("\n")[0], path
