"""``null`` two and three class levels deep on the command line (jsonargparse reads it
as the string 'None' there; ``cli.nulls`` rewrites such arguments into mappings)."""
from __future__ import annotations

import json

import pytest
from jsonargparse import ArgumentParser

from qed_lightning.cli.nulls import NullSafeArgs, class_options, nest_nested_nulls


class Client:
    def __init__(self, key: str | None = "KEY", effort: str | None = "medium", stops: list[int | None] | None = None):
        pass


class OtherClient(Client):
    pass


class Judge:
    def __init__(self, client: Client, template: str | None = "strict"):
        pass


class Module:
    def __init__(self, judge: Judge, lr: float | None = 1.0):
        pass


class NullSafeParser(NullSafeArgs, ArgumentParser):
    pass


BASE = [
    f"--module={__name__}.Module", f"--module.init_args.judge={__name__}.Judge",
    f"--module.init_args.judge.init_args.client={__name__}.OtherClient",
    "--module.init_args.judge.init_args.client.init_args.effort=high",
]


def parse(parser_class, *args):
    parser = parser_class(exit_on_error=False)
    parser.add_argument("--module", type=Module)
    return parser.parse_args([*BASE, *args]).module.init_args


def test_rewrite_of_each_form():
    opts = ["--judge", "--trainer.logger"]
    assert nest_nested_nulls(["--judge.init_args.client.init_args.key=null"], opts) == [
        '--judge.init_args.client={"init_args": {"key": null}}']
    assert nest_nested_nulls(["--judge.client.key", "~"], opts) == ['--judge.init_args.client={"key": null}']
    assert nest_nested_nulls(["--judge.init_args.client.init_args.stops=[1, null]"], opts) == [
        '--judge.init_args.client={"init_args": {"stops": [1, null]}}']
    unchanged = ["--judge.init_args.template=null",  # one level: jsonargparse reads it right
                 "--judge.init_args.client.init_args.key=abc",  # no null
                 "--trainer.logger.init_args.save_dir=null",  # one level below its class option
                 "--other.a.b=null",  # not a class option
                 "fit", "--judge.client.key"]
    assert nest_nested_nulls(unchanged, opts) == unchanged


def test_jsonargparse_alone_reads_deep_null_as_the_string_none():
    """The behaviour worked around: if this starts failing, jsonargparse fixed it."""
    deep = parse(ArgumentParser, "--module.init_args.judge.init_args.client.init_args.key=null")
    assert deep.judge.init_args.client.init_args.key == "None"


@pytest.mark.parametrize("arg", [
    "--module.init_args.judge.init_args.client.init_args.key=null",  # depth three, long form
    "--module.judge.client.key=null",  # short form
])
def test_null_three_levels_deep(arg):
    module = parse(NullSafeParser, arg)
    client = module.judge.init_args.client
    assert client.class_path == f"{__name__}.OtherClient"
    assert client.init_args.key is None
    assert client.init_args.effort == "high"  # set before: kept
    assert module.judge.init_args.template == "strict" and module.lr == 1.0


def test_null_two_levels_deep_and_inside_a_list():
    module = parse(NullSafeParser, "--module.init_args.judge.init_args.template=null",
                   "--module.init_args.judge.init_args.client.init_args.stops=[3, null]")
    assert module.judge.init_args.template is None
    assert module.judge.init_args.client.init_args.stops == [3, None]
    assert module.judge.init_args.client.init_args.key == "KEY"


def test_class_options_are_the_class_typed_arguments():
    parser = ArgumentParser()
    parser.add_argument("--module", type=Module)
    parser.add_argument("--count", type=int)
    parser.add_argument("--maybe", type=Judge | None)
    assert sorted(class_options(parser._option_string_actions)) == ["--maybe", "--module"]
    assert json.loads(nest_nested_nulls(["--maybe.client.key=null"], ["--maybe"])[0].split("=", 1)[1]) == {
        "key": None}
