"""`binsight`: the command list, and a mistyped command named with the choices."""

from binsight import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name} " in out


def test_an_unknown_command_is_named_with_the_choices(capsys):
    assert cli.main(["nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # usage and error both go to stderr: a script reading stdout gets nothing
    assert (
        captured.err.strip().splitlines()[-1]
        == "binsight: unknown command 'nope': expected one of list, predict, serve, tune, recipe"
    )
