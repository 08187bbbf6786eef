"""Every command the README and docs/ show parses with its tool's own argument parser, names a
config that ships, and every make target exists: the docs cannot drift from the code."""

import argparse
import glob
import importlib.util
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))), "datasets/README.md"]
COMMAND_START = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?(?:python3?|make)\s")


def _commands():
    """(page, command) of every command in a fenced block or an inline code span."""
    found = []
    for page in PAGES:
        text = open(os.path.join(ROOT, page)).read()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        for block in blocks:
            for line in re.sub(r"\\\n\s*", " ", block).split("\n"):
                if COMMAND_START.match(line.strip()):
                    found.append((os.path.relpath(os.path.join(ROOT, page), ROOT), line.strip()))
        outside = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", outside):
            if COMMAND_START.match(span.strip()):
                found.append((os.path.relpath(os.path.join(ROOT, page), ROOT), span.strip()))
    return found


COMMANDS = _commands()


class _Parsed(Exception):
    """Raised once a tool's parser has accepted the command line: nothing runs."""


def _tool_main(argv):
    """(command-line entry point, its arguments) of a python command line; None for the name of a
    tool alone (``python -m srn_d2.tools.export``, as prose names it) or a pattern (``<name>``)."""
    program = argv[1] if argv[0] == "-m" else argv[0]
    if "<" in program:
        return None
    if argv[0] == "-m" and len(argv) == 2:
        importlib.import_module(program)
        return None
    if program == "pytest":
        _check_pytest(argv[2:])
        return None
    if argv[0] == "-m":
        assert argv[1].startswith("srn_d2.tools."), (
            f"python -m {argv[1]}: not a tool of this repository"
        )
        module = importlib.import_module(argv[1])
        # train_net's main() is the per-process work that launch() runs; run() parses the command line.
        return getattr(module, "run", module.main), argv[2:]
    script = argv[0]
    if script in ("train_net.py", "demo.py"):
        module = importlib.import_module(
            "srn_d2.tools." + ("train_net" if script == "train_net.py" else "detect")
        )
        return getattr(module, "run", module.main), argv[1:]
    assert script.startswith("benchmarks/"), f"{script}: not a tool of this repository"
    spec = importlib.util.spec_from_file_location(
        os.path.basename(script)[:-3], os.path.join(ROOT, script)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main, argv[1:]


def _check_pytest(argv):
    """A pytest command line: its marker expression names registered markers, its paths exist."""
    markers = set(re.findall(r"^\s+(\w+):", open(os.path.join(ROOT, "pytest.ini")).read(), re.M))
    rest = list(argv)
    while rest:
        token = rest.pop(0)
        if token == "-m":
            words = set(re.findall(r"\w+", rest.pop(0))) - {"and", "or", "not"}
            assert words <= markers, f"pytest -m names unregistered markers {words - markers}"
        elif token == "-n":
            processes = rest.pop(0)
            assert processes == "auto" or processes.isdigit(), (
                f"pytest -n {processes}: not a process count"
            )
        elif not token.startswith("-"):
            assert os.path.exists(os.path.join(ROOT, token.split("::")[0])), (
                f"pytest: {token} does not exist"
            )


def _make_targets():
    return set(re.findall(r"^([a-z][a-z-]*):", open(os.path.join(ROOT, "Makefile")).read(), re.M))


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_a_documented_command_parses(page, command, monkeypatch):
    for part in command.split("&&"):
        tokens = [t for t in shlex.split(part, comments=True) if not re.match(r"^[A-Z_]+=", t)]
        program, argv = os.path.basename(tokens[0]), tokens[1:]
        if program == "make":
            unknown = [t for t in argv if "=" not in t and t not in _make_targets()]
            assert not unknown, f"{page}: make has no target {unknown}"
            continue
        configs = [argv[i + 1] for i, t in enumerate(argv[:-1]) if t == "--config-file"]
        for config in configs:
            assert os.path.exists(os.path.join(ROOT, config)), f"{page}: {config} does not exist"
        found = _tool_main(argv)
        if found is None:
            continue
        main, tool_argv = found

        def parse_and_stop(parser, args=None, namespace=None):
            original_parse_args(parser, args, namespace)
            raise _Parsed

        original_parse_args = argparse.ArgumentParser.parse_args
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        with pytest.raises(_Parsed):
            main(tool_argv)
        monkeypatch.undo()


def test_the_pages_show_commands_of_every_kind():
    shown = " ".join(command for _, command in COMMANDS)
    for kind in (
        "train_net.py",
        "demo.py",
        "-m srn_d2.tools.export",
        "benchmarks/",
        "make demo",
        "make test",
    ):
        assert kind in shown, kind
    assert len(COMMANDS) > 40
