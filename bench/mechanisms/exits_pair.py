from .exits import Exits


class ExitsPair(Exits):
    """Kept for the tests (tests/test_extending.py): the README's "Extending" steps, done."""
    name = "exits-pair"
    summary = "test only: memory-fault exits where each fault also installs the next page"
    c_name = "exits_pair"
    hidden = True
