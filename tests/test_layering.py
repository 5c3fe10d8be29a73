"""What each package may import: the library knows nothing of the app, training, evaluation or benchmarks."""

import ast
from pathlib import Path

import pytest
from conftest import ROOT

FORBIDDEN = {  # package -> top-level modules it must never import
    "vae": {"web", "celeba", "train", "evaluation", "bench", "app", "tests", "gradio", "gradio_client", "sklearn"},
    "web": {"celeba", "train", "evaluation", "bench", "app", "tests"},
    "celeba": {"web", "train", "evaluation", "bench", "app", "tests", "gradio"},  # the data layer under both
    "train": {"web", "evaluation", "bench", "app", "tests", "gradio"},
    "evaluation": {"web", "train", "bench", "app", "tests"},
    "bench": {"tests"},  # the app server and fake camera that tests and benchmarks share live in bench/
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, wherever it appears (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_allows(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files in {package}/"
    wrong = {f"{path.relative_to(ROOT)} imports {name}" for path in files for name in imported_modules(path) & FORBIDDEN[package]}
    assert not wrong, sorted(wrong)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from web.app import create_app\n    import train.cache as c\nfrom . import x\n")
    assert imported_modules(sample) == {"os", "web", "train"}


def test_app_py_sets_how_openmp_waits_before_anything_that_loads_torch():
    body = ast.parse((ROOT / "app.py").read_text()).body
    call = next(i for i, node in enumerate(body) if isinstance(node, ast.Expr) and "wait_briefly_for_work" in ast.unparse(node))
    project = [
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("vae", "web") and node.module != "vae.runtime"
    ]
    assert project and call < min(project)  # vae.runtime itself imports no torch (test_speed runs it in a fresh interpreter)


def test_app_py_is_thin_and_importing_it_builds_nothing():
    tree = ast.parse((ROOT / "app.py").read_text())
    top_level_calls = [
        ast.unparse(node.value) for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
    ]
    assignments = [node for node in tree.body if isinstance(node, ast.Assign)]
    # the one call: an environment variable set before torch loads (libgomp reads it once); nothing is built
    assert top_level_calls == ["wait_briefly_for_work()"] and all(
        not isinstance(node.value, ast.Call) or ast.unparse(node.value.func).startswith("Path") for node in assignments
    )
