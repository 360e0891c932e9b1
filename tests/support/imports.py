"""The repo's own files that a Python entry point runs: every import statement, lazy ones inside functions
included, followed transitively through the modules of the repo (third-party imports are not followed)."""

import ast
from pathlib import Path


def imported_names(path):
    """Every module name an import statement of `path` names, at any depth of the file. `from a import b`
    gives both `a` and `a.b` (b may be a submodule)."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    package = ".".join(Path(path).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package up
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def module_file(root, name):
    """`binsight.data.raw_bins` -> root/binsight/data/raw_bins.py (or the package's __init__.py); None when
    the name is not a module of the repo."""
    base = Path(root, *name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_closure(root, entry):
    """The repo files (relative to root) that `python ENTRY` may import, with the __init__.py of every
    package on the way (importing a.b.c runs a/__init__.py and a/b/__init__.py first)."""
    root = Path(root)
    seen, todo = set(), [Path(entry)]
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for name in imported_names(root / rel):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                found = module_file(root, ".".join(parts[:depth]))
                if found is not None:
                    todo.append(found.relative_to(root))
    return seen
