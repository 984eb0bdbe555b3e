"""Mutation testing of one module: do the tests notice when its code is changed?

    .venv/bin/python benchmarks/mutants.py src/artsentry/data/splits.py \
        --tests "tests/test_data.py tests/test_recipes.py -k 'split or instance'"
    .venv/bin/python benchmarks/mutants.py src/artsentry/evaluate.py --lines 124-392 \
        --tests "tests/test_evaluate.py" --json runs/mutants-evaluate.json

Each mutant changes one thing in the module (a comparison flipped or loosened: ``<`` to ``<=``,
``==`` to ``!=``, ``in`` to ``not in``; ``+`` to ``-``, ``*`` to ``/``; ``and`` to ``or``; a ``not``
dropped; a number moved by one, or doubled; ``True`` to ``False``), within ``--lines``. The given
tests run against each mutant; a mutant they pass "survived": either the tests do not pin that
behaviour down, or the change is equivalent (a default argument, a bound another check already
enforces). Read each survivor and decide. The working tree is never changed: ``src/`` is copied
to a temporary folder, which comes first on ``PYTHONPATH`` for the test runs.

Prints one line per mutant and the count of survivors; ``--json`` writes them all.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLIP_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
FLIP_BINARY = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
               ast.Mod: ast.FloorDiv}
FLIP_BOOL = {ast.And: ast.Or, ast.Or: ast.And}


def mutation_sites(tree: ast.AST, first: int, last: int) -> list[tuple]:
    """(kind, line, column, operator index, end) of every place a mutant can be made in lines first..last."""
    sites = []
    for node in ast.walk(tree):
        if not first <= getattr(node, "lineno", 0) <= last:
            continue
        # nested operations can start at one place (``a * b / c``): the end tells them apart
        at = (node.lineno, node.col_offset)
        end = (node.end_lineno, node.end_col_offset)
        if isinstance(node, ast.Compare):
            sites += [("compare", *at, i, end) for i, op in enumerate(node.ops) if type(op) in FLIP_COMPARE]
        elif isinstance(node, ast.BinOp) and type(node.op) in FLIP_BINARY:
            sites.append(("binary", *at, 0, end))
        elif isinstance(node, ast.BoolOp) and type(node.op) in FLIP_BOOL:
            sites.append(("bool", *at, 0, end))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            sites.append(("not", *at, 0, end))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            sites.append(("constant", *at, 0, end))
    return sorted(sites, key=lambda s: s[1:])


class _Mutate(ast.NodeTransformer):
    def __init__(self, site: tuple):
        self.kind, self.line, self.col, self.index, self.end = site

    def _here(self, node, kind: str) -> bool:
        return kind == self.kind and (getattr(node, "lineno", None), getattr(node, "col_offset", None)) == (
            self.line, self.col) and (node.end_lineno, node.end_col_offset) == self.end

    def visit_Compare(self, node):
        self.generic_visit(node)
        if self._here(node, "compare"):
            node.ops[self.index] = FLIP_COMPARE[type(node.ops[self.index])]()
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if self._here(node, "binary"):
            node.op = FLIP_BINARY[type(node.op)]()
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        if self._here(node, "bool"):
            node.op = FLIP_BOOL[type(node.op)]()
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        return node.operand if self._here(node, "not") else node

    def visit_Constant(self, node):
        if not self._here(node, "constant"):
            return node
        v = node.value
        new = (not v) if isinstance(v, bool) else (v * 2 if isinstance(v, float) and v else v + 1)
        return ast.copy_location(ast.Constant(new), node)


def mutant_source(tree: ast.AST, site: tuple) -> str:
    return ast.unparse(ast.fix_missing_locations(_Mutate(site).visit(copy.deepcopy(tree))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module", help="a file under src/, e.g. src/artsentry/data/splits.py")
    ap.add_argument("--tests", required=True, help="pytest arguments, quoted as one string")
    ap.add_argument("--lines", default=None, metavar="FIRST-LAST", help="mutate only these lines (default: all)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per test run, longer counts as caught (a mutant that loops for ever); "
                         "default: 5 x the unmutated run, at least 30")
    ap.add_argument("--json", default=None, help="write every mutant's result here")
    a = ap.parse_args()

    module = Path(a.module).resolve()
    try:
        rel = module.relative_to(ROOT / "src")
    except ValueError:
        raise SystemExit(f"{a.module} is not under {ROOT / 'src'}") from None
    source = module.read_text(encoding="utf-8")
    tree = ast.parse(source)
    first, last = (int(x) for x in a.lines.split("-")) if a.lines else (1, 10**9)
    sites = mutation_sites(tree, first, last)
    lines = source.splitlines()
    pytest_args = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *shlex.split(a.tests)]

    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               "PYTHONDONTWRITEBYTECODE": "1"}
        target = src / rel
        # the tests must pass, and import the copy, before any mutant means anything
        check = subprocess.run([sys.executable, "-c", "import artsentry; print(artsentry.__file__)"],
                               cwd=ROOT, env=env, capture_output=True, text=True)
        if not check.stdout.strip().startswith(str(src)):
            raise SystemExit(f"the test runs would not import the mutated copy ({check.stdout.strip() or check.stderr})")
        t0 = time.time()
        base = subprocess.run(pytest_args, cwd=ROOT, env=env, capture_output=True, text=True)
        if base.returncode != 0:
            raise SystemExit(f"the tests fail (or select nothing) before any mutation:\n{base.stdout[-2000:]}")
        timeout = a.timeout or max(30.0, 5 * (time.time() - t0))
        print(f"{rel}: {len(sites)} mutants in lines {first}-{min(last, len(lines))}; tests: {a.tests}", flush=True)
        results = []
        for k, site in enumerate(sites, 1):
            target.write_text(mutant_source(tree, site), encoding="utf-8")
            t0 = time.time()
            try:
                run = subprocess.run(pytest_args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
                caught = run.returncode != 0
            except subprocess.TimeoutExpired:
                caught = True
            kind, line, col = site[:3]
            results.append({"kind": kind, "line": line, "column": col, "code": lines[line - 1].strip(),
                            "caught": caught, "seconds": round(time.time() - t0, 1)})
            print(f"[{k}/{len(sites)}] {'caught  ' if caught else 'SURVIVED'} line {line}:{col} {kind}: "
                  f"{lines[line - 1].strip()[:90]}", flush=True)
    survivors = [r for r in results if not r["caught"]]
    print(f"{len(survivors)} of {len(results)} mutants survived")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
