"""The operator harness lives in tests/harness.py (a suite-wide plugin); re-exported here for
older imports."""

from tests.harness import Harness

__all__ = ["Harness"]
