"""The worker's shape (issue 17): its longest functions, `Worker`'s method count, and the
process-vs-thread conditionals left in the supervisor and remote control.

    python benchmarks/worker_shape.py [src/celeriac]
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys


def main() -> None:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src/celeriac")
    rows = []
    for path in sorted((root / "worker").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                rows.append((length, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    rows.sort(reverse=True)
    print("longest functions in worker/ (lines, with signature and docstring):")
    for length, where in rows[:8]:
        print(f"  {length:4d}  {where}")
    print(f"  over 40 lines: {sum(1 for length, _ in rows if length > 40)}")
    for node in ast.parse((root / "worker/supervisor.py").read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == "Worker":
            print(f"Worker methods: {sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in node.body)}")
    kind = re.compile(r"\b(slot|s)\.(process|thread|consumer)\b|pool ==|pool !=|options\.pool ")
    branch = re.compile(r"\bif\b|\belif\b|\bwhile\b|\belse\b")
    for name in ("worker/supervisor.py", "worker/remote.py", "worker/command_state.py"):
        lines = (root / name).read_text().splitlines()
        count = sum(1 for line in lines if kind.search(line) and branch.search(line))
        print(f"process/thread conditionals in {name}: {count}")


if __name__ == "__main__":
    main()
