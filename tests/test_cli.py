"""`binsight`: the command list, a mistyped command named with the choices, and `binsight cut-list`."""

import json

import pytest

from binsight import cli
from binsight.data.list_cut import cut_list
from binsight.tune.recipes import RECIPES


def test_help_lists_every_command_and_every_recipe(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name} " in out
    for recipe in RECIPES:  # abid-full included: the list is read from the recipes, not written twice
        assert recipe in out.split("  recipe ")[1]


def test_an_unknown_command_is_named_with_the_choices(capsys):
    assert cli.main(["nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # usage and error both go to stderr: a script reading stdout gets nothing
    assert captured.err.strip().splitlines()[-1] == (
        "binsight: unknown command 'nope': expected one of " + ", ".join(cli.COMMANDS)
    )


def test_cut_list_keeps_only_the_bins_a_copy_holds_in_their_order():
    listing = {"1": ["data/metadata/3.json", "data/metadata/1.json"], "2": ["data/metadata/2.json"]}
    assert cut_list(listing, {"1", "3"}) == {"1": ["data/metadata/3.json", "data/metadata/1.json"], "2": []}


def test_cut_list_command_writes_the_cut_list(tmp_path, capsys):
    (tmp_path / "copy" / "metadata").mkdir(parents=True)
    (tmp_path / "copy" / "metadata" / "7.json").write_text("{}")
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"1": ["data/metadata/7.json", "data/metadata/8.json"]}))
    assert cli.main(["cut-list", str(listing), str(tmp_path / "copy"), "--out", str(tmp_path / "cut.json")]) == 0
    assert json.loads((tmp_path / "cut.json").read_text()) == {"1": ["data/metadata/7.json"]}
    assert "1 of 2 bins kept" in capsys.readouterr().err


def test_cut_list_names_a_folder_that_is_not_a_copy(tmp_path, capsys):
    listing = tmp_path / "list.json"
    listing.write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cut-list", str(listing), str(tmp_path), "--out", str(tmp_path / "cut.json")])
    assert exit_.value.code == 2
    assert "has no metadata/ folder" in capsys.readouterr().err
    assert not (tmp_path / "cut.json").exists()
