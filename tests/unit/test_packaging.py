"""The installed `pdo` is the whole of services/: pyproject.toml lists every package (an unlisted one would be
missing from a wheel while the checkout's tests still pass), and lists nothing that is not one."""

from __future__ import annotations

import tomllib

from pdo.core.config import PROJECT_ROOT

SERVICES = PROJECT_ROOT / "services"


def listed_packages() -> set[str]:
    setuptools = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"pdo": "services"}
    return set(setuptools["packages"])


def package_folders() -> set[str]:
    """`pdo.<dotted path>` of every folder under services/ with an __init__.py."""
    return {
        ".".join(("pdo", *marker.parent.relative_to(SERVICES).parts))
        for marker in SERVICES.rglob("__init__.py")
        if "__pycache__" not in marker.parts
    }


def test_every_package_under_services_is_listed_in_pyproject():
    missing = package_folders() - listed_packages()

    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_pyproject_lists_only_packages_that_exist():
    stale = listed_packages() - package_folders()

    assert not stale, (
        f"pyproject.toml lists {sorted(stale)}, which services/ does not hold (or lack __init__.py)"
    )


def test_every_folder_with_python_modules_is_a_package():
    # A folder of modules without __init__.py imports from a checkout (namespace package) but is left out
    # of the wheel: the listing above would not see it.
    loose = sorted(
        str(folder.relative_to(PROJECT_ROOT))
        for folder in {
            module.parent for module in SERVICES.rglob("*.py") if "__pycache__" not in module.parts
        }
        if not (folder / "__init__.py").exists()
    )

    assert not loose, f"these folders hold Python modules but no __init__.py: {loose}"
