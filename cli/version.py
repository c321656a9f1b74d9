"""The version `gatepass --version` prints: a constant, kept equal to pyproject.toml's (tests/cli/test_startup.py)."""

# A constant rather than importlib.metadata.version("gatepass"): the metadata lookup costs tens of milliseconds
# (it imports email, zipfile and more, then reads the installed distributions) on a command that should answer at once.
__version__ = "0.1.0"
