"""Every command line the documents show for the project's own scripts parses: its flags exist, their values are
of the right kind and nothing required is missing. A renamed flag then fails here, not in a reader's shell."""
import argparse
import re
import runpy
import shlex
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "BENCHMARKS.md", "RESULTS.md", *sorted(p.relative_to(ROOT).as_posix()
                                                               for p in (ROOT / "docs").glob("*.md")))
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:python3?|torchrun)\s")
OWN_MODULES = ("utils.", "benchmarks.")


def code_lines(text: str) -> list:
    """The command lines of a Markdown text's code (indented or fenced), continuation lines joined."""
    lines, fenced, current = [], False, ""
    for line in text.splitlines() + [""]:
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            current = ""
            continue
        current += " " + line.strip()
        if current.endswith("\\"):
            current = current[:-1]
            continue
        lines.append(current.strip())
        current = ""
    return [line for line in lines if COMMAND.match(line)]


def target_and_argv(line: str):
    """("module" or "path", the name, its arguments) of a project command; None for another program's, or for a
    command shown in part (an elision outside an optional group, or a shell variable)."""
    line = re.sub(r"\[[^\]]*\.\.\.[^\]]*\]", " ", line)  # an optional group with an elision: nothing to check
    line = line.replace("[", " ").replace("]", " ")
    tokens = shlex.split(line, comments=True)
    if "..." in tokens or any("$" in t for t in tokens):
        return None
    while re.match(r"^[A-Z_]+=", tokens[0]):
        tokens.pop(0)
    if tokens[0] == "torchrun":
        script = next(i for i, t in enumerate(tokens) if t.endswith(".py"))
        return "path", tokens[script], tokens[script + 1:]
    if tokens[1] == "-m":
        return ("module", tokens[2], tokens[3:]) if tokens[2].startswith(OWN_MODULES) else None
    return ("path", tokens[1], tokens[2:]) if tokens[1].endswith(".py") and "/" not in tokens[1] else None


COMMANDS = [(doc, line) for doc in DOCUMENTS for line in code_lines((ROOT / doc).read_text())
            if target_and_argv(line)]


class Parsed(Exception):
    """Raised once the program's arguments parsed, before it runs."""


def test_the_documents_show_commands_of_every_kind():
    kinds = {target_and_argv(line)[1].split(".")[0] for _, line in COMMANDS}
    assert {"utils", "benchmarks", "main_empssl_free_adv", "evaluate_empssl"} <= kinds


def parse_error(line: str, monkeypatch, capsys) -> str:
    """What the command's program says on parsing ``line``'s arguments: "" when they parse (it stops there)."""
    kind, name, argv = target_and_argv(line)
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr("sys.argv", [name, *argv])
    monkeypatch.chdir(ROOT)
    run = runpy.run_module if kind == "module" else runpy.run_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy's note on a module the suite imported already
        try:
            run(name, run_name="__main__")
        except Parsed:
            return ""
        except SystemExit as e:
            assert e.code == 2, f"`{line}` exited {e.code} while parsing"
            return capsys.readouterr().err.strip()
    pytest.fail(f"`{line}` ran to the end without parsing its arguments")


@pytest.mark.parametrize("doc,line", COMMANDS, ids=[f"{d}:{i}" for i, (d, _) in enumerate(COMMANDS)])
def test_a_documented_command_parses(doc, line, monkeypatch, capsys):
    error = parse_error(line, monkeypatch, capsys)
    assert not error, f"{doc}: `{line}` does not parse: {error}"


def test_a_command_with_a_flag_no_script_has_fails_here(monkeypatch, capsys):
    """The check itself can fail: a made-up flag is refused, by name."""
    error = parse_error("python main_empssl_free_adv.py --data-dir data --no-such-flag 1", monkeypatch, capsys)
    assert "unrecognized arguments: --no-such-flag 1" in error
