"""Only the package list lives here; all other metadata is in pyproject.toml.

The published reference tables (``replication/``) and the report templates (``reports/``) live at the
repository root, where a reader looks for them, and are installed as sub-packages of ``cxr_bench`` so an
installed copy finds them too (``importlib.resources.files("cxr_bench.replication_data")``).
pyproject's ``packages.find`` cannot add directories mapped from outside the package, hence this file.

The data folders inside the package (``cxr_bench/bundled/nih`` ...) have no ``__init__.py``; they are found as
namespace packages so setuptools knows them as the package data they are (and says nothing at install).
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["cxr_bench", "cxr_bench.*"])
    + ["cxr_bench.replication_data", "cxr_bench.report_templates"],
    package_dir={
        "cxr_bench.replication_data": "replication",
        "cxr_bench.report_templates": "reports",
    },
)
