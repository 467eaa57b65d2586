"""The command dispatcher: help lists each command's own options; bad commands are usage errors."""
from __future__ import annotations

import pytest

from hiclip.cli import COMMANDS, main


def test_command_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "shapes", "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_group_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    out = capsys.readouterr().out
    assert "trees" in out and "groups" in out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("path,module", [(p, m) for p, m, _ in COMMANDS])
def test_every_registered_command_has_a_module(path, module):
    import importlib

    mod = importlib.import_module(module)
    assert callable(mod.add_arguments) and callable(mod.run), path
