"""Maps the four top-level code folders onto the ``assay`` namespace.

``assay`` itself is a namespace package (there is no ``assay/`` folder): ``engine/`` installs as
``assay.engine`` and so on, so nothing called ``engine`` or ``cluster`` lands at the top of
site-packages. Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("engine", "actors", "kernels", "cluster")

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder in FOLDERS:
    packages.append(f"assay.{folder}")
    package_dir[f"assay.{folder}"] = folder
    for sub in find_packages(folder):
        packages.append(f"assay.{folder}.{sub}")
        package_dir[f"assay.{folder}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
