"""The runtime names no service: everything specific to one lives in its pack.

``luabridge/`` must not import an integration pack, and no code in it (identifiers, string
literals that are not docstrings, Lua outside comments) may name an installed service; a
docstring or comment may still use one as an example.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import luabridge
from luabridge.registry import ENTRY_POINT_GROUP, discover_integrations

ROOT = Path(luabridge.__file__).parent
PY_FILES = sorted(ROOT.rglob("*.py"))
LUA_FILES = sorted(ROOT.rglob("*.lua"))


def _service_words() -> set[str]:
    words = {"loops"}
    for integ in discover_integrations():
        words |= {integ.name.lower(), integ.title.lower(), integ.env_prefix.lower()}
    return words


def _pack_modules() -> set[str]:
    modules = {"integrations"}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        modules.add(ep.value.split(":")[0].split(".")[0])
    return modules


WORDS = _service_words()
WORD_RE = re.compile(
    r"(?i)(?<![a-z0-9])(" + "|".join(map(re.escape, sorted(WORDS))) + r")(?![a-z0-9])"
)


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                first = body[0]
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
        # `#: comment` style attribute docs are comments; a bare string after an assignment is
        # an attribute docstring.
        if isinstance(node, ast.Module | ast.ClassDef):
            for prev, cur in zip(node.body, node.body[1:], strict=False):
                if (
                    isinstance(prev, ast.Assign | ast.AnnAssign)
                    and isinstance(cur, ast.Expr)
                    and isinstance(cur.value, ast.Constant)
                    and isinstance(cur.value.value, str)
                ):
                    lines.update(range(cur.lineno, (cur.end_lineno or cur.lineno) + 1))
    return lines


def test_the_check_knows_the_installed_services() -> None:
    assert "loops" in WORDS
    assert "integrations" in _pack_modules()


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_runtime_module_imports_a_pack(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    packs = _pack_modules()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in packs, f"{path}:{node.lineno} imports {name}"


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_runtime_code_names_a_service(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    docstrings = _docstring_lines(ast.parse(text))
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME and tok.string.lower() in WORDS:
            found.append((tok.start[0], tok.string))
        elif tok.type == tokenize.STRING and tok.start[0] not in docstrings:
            match = WORD_RE.search(tok.string)
            if match:
                found.append((tok.start[0], tok.string[:60]))
    assert not found, f"{path} names a service outside docstrings and comments: {found}"


@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_runtime_lua_names_a_service(path: Path) -> None:
    code = [line.split("--", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]
    found = [(n, line) for n, line in enumerate(code, 1) if WORD_RE.search(line)]
    assert not found, f"{path} names a service outside comments: {found}"


def test_the_check_catches_a_service_name(tmp_path: Path) -> None:
    """The scan above would catch a service-specific branch (a guard against a no-op test)."""
    sample = 'def f(integ):\n    """Docs may say loops."""\n    return integ.name == "loops"\n'
    docstrings = _docstring_lines(ast.parse(sample))
    hits = [
        tok.start[0]
        for tok in tokenize.generate_tokens(io.StringIO(sample).readline)
        if tok.type == tokenize.STRING
        and tok.start[0] not in docstrings
        and WORD_RE.search(tok.string)
    ]
    assert hits == [3]
