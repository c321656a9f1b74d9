"""Make ``~/.ssh/config`` include Gatepass's generated config: one ``Include`` line, once, where it applies.

OpenSSH reads an ``Include`` inside a ``Host`` or ``Match`` block only for connections matching that block
(ssh_config(5)), so the line goes at the top of the file, before the first block. The rest of the file is left as
it was, byte for byte; a config that is a symbolic link (dotfile managers) is written where the link points.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path

from cli.errors import LocalSetupError
from cli.sshargs import config_value
from cli.state import write_private_file

MARK = "# Added by `gatepass ssh-config --write`: the Host ASSET.gatepass entries of your grants."
_KEYWORD = re.compile(r"^\s*([A-Za-z]+)\s*(?:=\s*|\s+)(.*)$")


def includes(text: str, target: Path, *, home: Path) -> bool:
    """Whether ``text`` includes ``target`` before its first Host or Match block (for every connection)."""
    for line in text.splitlines():
        found = _KEYWORD.match(line)
        if found is None or line.lstrip().startswith("#"):
            continue
        keyword, value = found.group(1).lower(), found.group(2)
        if keyword in ("host", "match"):
            return False
        if keyword == "include" and any(_same_path(word, target, home=home) for word in _words(value)):
            return True
    return False


def _words(value: str) -> list[str]:
    try:
        return shlex.split(value, comments=True)
    except ValueError:  # an unbalanced quote: OpenSSH would refuse the line; it includes nothing of ours
        return []


def _same_path(word: str, target: Path, *, home: Path) -> bool:
    if word.startswith("~/"):
        word = str(home / word[2:])
    elif not os.path.isabs(word):
        word = str(home / ".ssh" / word)  # relative Include paths are read from ~/.ssh (ssh_config(5))
    return os.path.normpath(word) == os.path.normpath(str(target))


def with_include(text: str, target: Path) -> str:
    """``text`` with the Include line (and a comment saying who added it) at the top."""
    return f"{MARK}\nInclude {config_value(target)}\n\n{text}"


def ensure_included(target: Path, *, home: Path) -> tuple[Path, bool]:
    """Make ``home/.ssh/config`` include ``target``; return the file written (or read) and whether it changed."""
    # ssh reads a relative Include from ~/.ssh, not from where gatepass ran (ssh_config(5)): a relative
    # GATEPASS_HOME would be included as a file that is not there, silently, and added again at every run.
    target = target.absolute()
    config = real = home / ".ssh" / "config"
    try:
        real = config.resolve() if config.is_symlink() else config
        text = real.read_bytes().decode("utf-8")  # bytes: line endings stay as they were
        mode: int | None = stat.S_IMODE(real.stat().st_mode)
    except FileNotFoundError:
        text, mode = "", None
    except (OSError, UnicodeDecodeError, RuntimeError) as exc:  # RuntimeError: a loop of links (pathlib, 3.11)
        raise LocalSetupError(f"cannot read {config} to add the Include line ({exc}): add "
                              f"`Include {config_value(target)}` at its top yourself") from None
    if includes(text, target, home=home):
        return real, False
    try:
        if mode is None:
            (home / ".ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(real, with_include(text, target))
        if mode is not None:
            real.chmod(mode)  # keep the owner's choice; a new file stays 0600
    except OSError as exc:
        raise LocalSetupError(f"cannot write {config} ({exc.strerror}): add `Include {config_value(target)}` "
                              "at its top yourself") from exc
    return real, True
