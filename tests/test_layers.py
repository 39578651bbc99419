"""Imports run one way through the library: the layer table in WORKSPACE.md ("## Layers") is the law.

A package of taskmem_jax may import only packages of strictly lower layers (so no two packages can form a
cycle), and no module imports another of ours inside a function: lazy imports are for optional heavy
dependencies (torch, transformers' models, matplotlib, decord), never to hide a cycle or an upward edge.
The table is parsed from WORKSPACE.md, so the document and the check cannot drift apart.
"""

import ast
import os
import re
import sys

# Edges still to remove, each with its reason; an entry whose edge is gone fails the test, so the list only
# shrinks. Empty: every edge follows the table.
KNOWN: dict[tuple[str, str], str] = {}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "taskmem_jax")


def layer_table() -> dict[str, int]:
  """{package: layer} from the "layer N: a b c" lines of WORKSPACE.md's "## Layers" section."""
  text = open(os.path.join(ROOT, "WORKSPACE.md")).read()
  section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
  table = {}
  for number, names in re.findall(r"^layer (\d+): *(.+)$", section, re.M):
    for name in names.split():
      assert name not in table, f"WORKSPACE.md layers: {name} is listed twice"
      table[name] = int(number)
  return table


def package_of(module: str) -> str:
  """taskmem_jax.a.b -> "a"; taskmem_jax.io -> "io"."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def imports():
  """(module, imported module, line, at module level) for every import of taskmem_jax in the library."""
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
      tree = ast.parse(open(path).read(), path)
      top = {id(node) for node in tree.body}
      top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}  # TYPE_CHECKING
      for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("taskmem_jax"):
          # `from taskmem_jax import io` imports the module taskmem_jax.io
          targets = ([f"taskmem_jax.{a.name}" for a in node.names] if node.module == "taskmem_jax"
                     else [node.module])
        elif isinstance(node, ast.Import):
          targets = [a.name for a in node.names if a.name.startswith("taskmem_jax")]
        for target in targets:
          yield module, target, node.lineno, id(node) in top


def test_every_package_has_a_layer():
  table = layer_table()
  packages = {name.removesuffix(".py") for name in os.listdir(PACKAGE)
              if not name.startswith("_") and (name.endswith(".py") or any(
                  f.endswith(".py") for f in os.listdir(os.path.join(PACKAGE, name))))}
  assert packages - set(table) == set(), "packages missing from WORKSPACE.md's layer table"
  assert set(table) - packages == set(), "WORKSPACE.md's layer table names packages that do not exist"


def upward_edges(table: dict[str, int], known=KNOWN) -> list[str]:
  """Every import of a package from one of the same or a higher layer, but the known ones."""
  bad = []
  for module, target, line, _ in imports():
    if (module, target) in known:
      continue
    source, imported = package_of(module), package_of(target)
    if source and imported and source != imported and table[imported] >= table[source]:
      bad.append(f"{module}:{line} imports {target} ({source} is layer {table[source]}, "
                 f"{imported} layer {table[imported]})")
  return bad


def lazy_imports(known=KNOWN) -> list[str]:
  return [f"{module}:{line} imports {target} inside a function" for module, target, line, top in imports()
          if not top and (module, target) not in known]


def test_no_package_imports_upward_or_sideways():
  bad = upward_edges(layer_table())
  assert not bad, "\n".join(bad)


def test_no_lazy_imports_of_our_own_modules():
  lazy = lazy_imports()
  assert not lazy, "\n".join(lazy)


def test_every_known_exception_still_exists():
  edges = {(module, target) for module, target, _, _ in imports()}
  assert set(KNOWN) <= edges, f"remove the fixed edges from KNOWN: {set(KNOWN) - edges}"


def test_the_check_sees_an_upward_lazy_edge(tmp_path, monkeypatch):
  table = layer_table()
  low, high = min(table, key=table.get), max(table, key=table.get)
  fake = tmp_path / "taskmem_jax" / low
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text(f"def f():\n  from taskmem_jax.{high} import x\n")
  monkeypatch.setattr(sys.modules[__name__], "PACKAGE", str(tmp_path / "taskmem_jax"))
  monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
  assert list(imports()) == [(f"taskmem_jax.{low}", f"taskmem_jax.{high}", 2, False)]
  assert upward_edges(table) == [f"taskmem_jax.{low}:2 imports taskmem_jax.{high} ({low} is layer {table[low]}, "
                                 f"{high} layer {table[high]})"]
  assert lazy_imports() == [f"taskmem_jax.{low}:2 imports taskmem_jax.{high} inside a function"]
