"""Help formatting and one-line usage errors shared by every ``faceanalysis`` command."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, unless the help already says it or there is nothing to show
    (``None`` / ``False``: the option is simply off when not given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return super()._get_help_string(action)


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option (``new=`` names the current one): stores into the current option's
    ``dest`` and prints a deprecation warning on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kw) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors (unknown option, missing or malformed argument) are one line
    on stderr, ``PROG: error: MESSAGE (see PROG --help)``, with exit status 2, like the project's other errors;
    argparse itself prints the whole usage block first. Sub-command parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but arguments nobody recognises are reported by the deepest sub-command parser that
        was chosen (``faceanalysis analyze: error: unrecognized arguments: --bogus``), not by the top one."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            _chosen_parser(self, parsed).error("unrecognized arguments: " + " ".join(extra))
        return parsed


def _chosen_parser(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The sub-command parser (at any depth) that ``parsed`` went through; ``parser`` when it has none."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(parsed, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]
