"""What pyproject.toml cannot say: the packages found under services/ and clients/ (regular
packages only, so clients/js/node_modules is never taken for namespace packages) plus the
repo-root schemas/ folder installed as the package `services.contract`."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["services", "services.*", "clients", "clients.*"]),
        "services.contract",
    ],
    package_dir={"services.contract": "schemas"},
)
