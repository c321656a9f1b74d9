"""What keeps the command line's start-up small: name a function without importing its module (``Later``), and build
only the commands a command line names (``Commands``).

The parser is made on every start (``gatepass --version`` and ``--help`` included), so it names each subcommand's
handler and each argument's check with ``Later``: a module, and httpx or the key and SSH handling behind it, is
imported when its command runs or its argument is given, not before. Measured in bench/bench_cli.py.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, cast


class Later:
    """``module.name``, imported at the first call; callable like the function it stands for."""

    __slots__ = ("__name__", "module")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        # argparse names a check by its __name__ ("invalid check_asset_name value"), as it would the function itself.
        self.__name__ = name

    def __repr__(self) -> str:
        return f"Later({self.module!r}, {self.__name__!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def resolve(self) -> Callable[..., Any]:
        found: Callable[..., Any] = getattr(importlib.import_module(self.module), self.__name__)
        return found


if TYPE_CHECKING:
    _SubParsersAction = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # generic only in the type stubs
    _SubParsersAction = argparse._SubParsersAction


class Commands(_SubParsersAction):
    """The COMMAND argument (``add_subparsers(action=Commands)``). Every command is listed with its help, but only
    those ``named`` get their arguments: argparse reads the parser of the one command given and nothing of the
    others but their names and help, and building all seventy-odd parsers costs about as much as starting Python."""

    named: Collection[str] | None = None  # the words of the command line being parsed; None builds every command

    def builds(self, name: str) -> bool:
        return self.named is None or name in self.named

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser = super().add_parser(name, **kwargs)  # listed either way: `gatepass --help`, an invalid choice
        if self.builds(name) or any(self.builds(alias) for alias in kwargs.get("aliases", ())):
            return parser
        return cast("argparse.ArgumentParser", _Unbuilt())


class _Unbuilt:
    """Stands in for the parser of a command the command line does not name: what its builder adds is dropped."""

    def __getattr__(self, _name: str) -> Callable[..., _Unbuilt]:
        return self._drop

    def _drop(self, *_args: object, **_kwargs: object) -> _Unbuilt:
        return self
