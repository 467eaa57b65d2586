"""The ``hiclip`` command line.

Each sub-command lives in its own module under ``hiclip/commands`` exposing
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
command runs, so ``hiclip --help`` stays fast and one broken command cannot break the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from hiclip.errors import HiCLIPError

DISTRIBUTION = "hiclip-toolkit"
#: Top-level packages installed beside ``hiclip``; PyPI has unrelated distributions of both names.
COMPANIONS = ("induction", "viz")

# (command path, module, help). A two-word path is a sub-command of the first word's group.
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("data", "shapes"), "hiclip.commands.data_shapes", "generate the synthetic shapes dataset"),
    (("train",), "hiclip.commands.train", "train HiCLIP or its vanilla twin"),
    (("eval",), "hiclip.commands.evaluate", "zero-shot classification and retrieval"),
    (("induce",), "hiclip.commands.induce", "induce trees and segment hierarchies from a checkpoint"),
    (("score", "trees"), "hiclip.commands.score_trees", "unlabeled bracket F1 against gold trees"),
    (("score", "groups"), "hiclip.commands.score_groups", "image groups against segmentation masks"),
    (("figures",), "hiclip.commands.figures", "paper figures from a checkpoint"),
    (("app",), "hiclip.commands.app", "start the Streamlit app"),
    (("import-clip",), "hiclip.commands.import_clip", "import a local transformers CLIPModel folder"),
    (("export-hf",), "hiclip.commands.export_hf", "export a vanilla checkpoint as a CLIPModel folder"),
    (("demo",), "hiclip.commands.demo", "the main job: induce, score and report on the shipped models"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiclip", description=__doc__.splitlines()[0])
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module, help_text in COMMANDS:
        if len(path) == 1:
            sub = top.add_parser(path[0], help=help_text)
        else:
            if path[0] not in groups:
                group = top.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = group.add_subparsers(dest=f"{path[0]}_command", metavar="COMMAND")
                groups[path[0]].required = True
            sub = groups[path[0]].add_parser(path[1], help=help_text)
        sub.set_defaults(_module=module)
        sub.set_defaults(_path=path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Parse the command path first, then let the command's module add its own options.
    path = _command_path(argv)
    if path is None:
        parser.parse_args(argv)  # usage, help or the error for an incomplete command; exits
    module = importlib.import_module(next(m for p, m, _ in COMMANDS if p == path))
    parser = build_parser()
    _attach(parser, path, module)
    args = parser.parse_args(argv)
    try:
        check_companions()
        return int(module.run(args) or 0)
    except HiCLIPError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def check_companions() -> None:
    """Fail in one line when an ``induction`` or ``viz`` package of another distribution shadows
    this one's (the import names are generic; which one Python finds depends on the path)."""
    for name in COMPANIONS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # a broken install; the command that needs it reports the import
        if getattr(module, "DISTRIBUTION", None) != DISTRIBUTION:
            raise HiCLIPError(f"the {name!r} package at {getattr(module, '__file__', '?')} is not "
                              f"{DISTRIBUTION}'s but another distribution's of the same name; uninstall that "
                              f"one (pip uninstall {name}) or reinstall {DISTRIBUTION}")


def _command_path(argv: list[str]) -> tuple[str, ...] | None:
    """The registered command named by the leading words of ``argv`` (None if there is none).

    Found by hand rather than by argparse so that ``--help`` is answered after the command has
    attached its own options, and so lists them.
    """
    words = [a for a in argv if not a.startswith("-")][:2]
    for path, _, _ in COMMANDS:
        if tuple(words[: len(path)]) == path:
            return path
    return None


def _attach(parser: argparse.ArgumentParser, path: tuple[str, ...], module) -> None:
    """Find the sub-parser for ``path`` and let ``module`` add its arguments to it."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = action.choices[path[0]]
    if len(path) == 2:
        action = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
        sub = action.choices[path[1]]
    module.add_arguments(sub)


if __name__ == "__main__":
    sys.exit(main())
