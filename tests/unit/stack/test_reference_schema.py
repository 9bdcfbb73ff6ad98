from pathlib import Path

import pytest

from fraudgraph.stack.source_db import SCHEMA_FILE

SHARED = Path(__file__).resolve().parents[4] / "shared" / "reference" / "bank_schema.sql"


def test_vendored_schema_is_the_shared_contract():
    """The repo ships the schema so users without ../shared can run it; it must stay the contract."""
    if not SHARED.exists():
        pytest.skip(f"no shared reference schema beside this clone ({SHARED}) to compare with")
    assert SCHEMA_FILE.read_text() == SHARED.read_text()
