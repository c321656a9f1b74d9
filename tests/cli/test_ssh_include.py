"""Where `gatepass ssh-config --write` finds its Include line, and what it leaves of the user's own config."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cli.errors import LocalSetupError
from cli.ssh_include import MARK, ensure_included, includes
from cli.state import ClientState

HOME = Path("/home/eng")
TARGET = HOME / ".gatepass" / "ssh_config"


@pytest.mark.parametrize("text", [
    "Include /home/eng/.gatepass/ssh_config\n",
    "include=/home/eng/.gatepass/ssh_config\n",
    "  Include ~/.gatepass/ssh_config # ours\n",
    'Include "/home/eng/.gatepass/ssh_config" /etc/ssh/more\n',
    "Include ../.gatepass/ssh_config\n",  # relative: from ~/.ssh
    "# a comment\nServerAliveInterval 10\nInclude /home/eng/.gatepass/ssh_config\nHost x\n",
])
def test_an_include_before_any_block_counts(text: str) -> None:
    assert includes(text, TARGET, home=HOME)


@pytest.mark.parametrize("text", [
    "",
    "Host plc\n    Include /home/eng/.gatepass/ssh_config\n",  # only for connections to plc
    "Match user x\nInclude /home/eng/.gatepass/ssh_config\n",
    "# Include /home/eng/.gatepass/ssh_config\n",
    "Include /home/eng/.gatepass/ssh_config.old\n",
    'Include "/home/eng/.gatepass/ssh_config\n',  # unbalanced quote: ssh refuses the line
])
def test_anything_else_does_not(text: str) -> None:
    assert not includes(text, TARGET, home=HOME)


def test_a_linked_config_is_written_where_the_link_points(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    dotfiles = tmp_path / "dotfiles" / "ssh_config"
    dotfiles.parent.mkdir()
    dotfiles.write_text("Host *\n  ForwardAgent no\n")
    (home / ".ssh" / "config").symlink_to(dotfiles)
    target = tmp_path / "state" / "ssh_config"

    written, added = ensure_included(target, home=home)

    assert (written, added) == (dotfiles, True)
    assert (home / ".ssh" / "config").is_symlink()
    assert dotfiles.read_text() == f"{MARK}\nInclude {target}\n\nHost *\n  ForwardAgent no\n"
    assert ensure_included(target, home=home) == (dotfiles, False)


def test_a_path_with_spaces_is_quoted(tmp_path: Path) -> None:
    home = tmp_path / "John Smith"
    target = home / ".gatepass" / "ssh_config"
    ensure_included(target, home=home)
    config = (home / ".ssh" / "config").read_text()
    assert f'Include "{target}"' in config
    assert includes(config, target, home=home)
    assert stat.S_IMODE((home / ".ssh" / "config").stat().st_mode) == 0o600


def test_an_unreadable_config_is_left_alone_with_the_line_to_add(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_bytes(b"Host \xff\n")
    with pytest.raises(LocalSetupError, match=r"add `Include .*` at its top yourself"):
        ensure_included(tmp_path / "ssh_config", home=home)
    assert (home / ".ssh" / "config").read_bytes() == b"Host \xff\n"


def test_a_relative_state_directory_is_included_by_its_absolute_path_and_only_once(tmp_path: Path) -> None:
    # GATEPASS_HOME=state: ssh would read `Include state/ssh_config` from ~/.ssh, not from where gatepass ran.
    home = tmp_path / "home"
    relative = Path(os.path.relpath(tmp_path / "state" / "ssh_config"))
    assert not relative.is_absolute()

    assert ensure_included(relative, home=home) == (home / ".ssh" / "config", True)

    assert (home / ".ssh" / "config").read_text().splitlines()[1] == f"Include {Path.cwd() / relative}"
    assert ensure_included(relative, home=home) == (home / ".ssh" / "config", False)
    assert ClientState.from_environ({"GATEPASS_HOME": str(relative.parent)}).home == Path.cwd() / relative.parent


def test_a_config_that_is_a_loop_of_links_is_left_alone_with_the_line_to_add(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").symlink_to("config.d")
    (home / ".ssh" / "config.d").symlink_to("config")
    with pytest.raises(LocalSetupError, match=r"cannot read .*config .*add `Include .*` at its top yourself"):
        ensure_included(tmp_path / "ssh_config", home=home)
    assert (home / ".ssh" / "config").is_symlink()
