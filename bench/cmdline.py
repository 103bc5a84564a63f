"""What every command of run_bench.py shares: the one-line-error argument parser
and the one-line usage error."""
import argparse


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """Bad input gets one line (and exit 2), not the whole usage block."""
    raising = False

    def error(self, message):
        if self.raising:
            raise UsageError(message)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_or_raise(self, argv: list[str]) -> argparse.Namespace:
        """Parse without exiting: a bad word raises UsageError with argparse's own
        message (for tools that check another command's words before running it)."""
        self.raising = True
        try:
            return self.parse_args(argv)
        finally:
            self.raising = False


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")


def name_list(choices):
    def parse(text: str) -> list[str]:
        names = [x for x in text.split(",") if x]
        for n in names:
            if n not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown name {n!r} (choose from {', '.join(choices)})")
        return names
    return parse
