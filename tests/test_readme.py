"""The README stays true: every configuration key and every result column is explained."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab.accounting import COLUMNS  # noqa: E402
from xdplab.config import load_schema  # noqa: E402

README = (REPO / "README.md").read_text()


def test_every_config_key_is_in_the_readme_table():
    missing = [k for k in load_schema()["properties"] if f"| `{k}` |" not in README]
    assert not missing, missing


def test_every_result_column_is_explained():
    missing = [c for c in COLUMNS if f"`{c}`" not in README and not c.startswith("unexplained_")]
    assert not missing, missing
    assert "`unexplained_*`" in README


def test_the_two_commands_come_first():
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block
    assert "make test" in (REPO / ".ci/run").read_text()


def test_config_readme_explains_every_key_without_sending_the_reader_back():
    text = (REPO / "config/README.md").read_text()
    missing = [k for k in load_schema()["properties"] if f"| `{k}` |" not in text]
    assert not missing, missing
    assert "config/README.md" in (REPO / "config/config.yaml").read_text()


def test_no_reference_to_files_the_repository_does_not_have():
    for name in ("TWO_MACHINE_TEST_APPROACH.md",):
        assert name not in README
    for path in (REPO / "benchmarks").glob("*.py"):
        assert "/tmp/pv/" not in path.read_text(), path
