# The one place the version is written: roiops.__version__ imports it and
# pyproject.toml reads it (setuptools' attr: parses this file without importing roiops).
__version__ = "0.1.0"
