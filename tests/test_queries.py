"""The named statements (``pgjobs/stores/queries.py``, ``sql/*.sql``, ``lua/*.lua``):
each loads by name, with the models' tables filled in and nothing else."""

import re

import pytest

from pgjobs.models import Job
from pgjobs.stores import queries
from pgjobs.stores.redis import SCRIPTS


@pytest.mark.parametrize("vendor", ["postgres", "mysql", "sqlite"])
def test_every_statement_names_the_models_tables_and_holds_no_other_template(vendor):
    statements = vars(queries.Queries(vendor, queries.tables(lambda name: f"<{name}>")))
    assert statements
    for name, text in statements.items():
        assert not re.search(r"\{\w+\}", text), name  # every table filled in
        assert "pgjobs_job" not in text.replace(f"<{Job._meta.db_table}>", ""), name
        assert text and not text.rstrip().endswith(";") and "\n--" not in text, name
        assert "{+" not in text and not name.startswith("_"), f"{name}: a shared part left"


def test_the_finish_statements_share_one_settling_part_written_in_whole():
    statements = queries.Queries("postgres", queries.tables(lambda name: f"<{name}>"))
    names = ["finish", "finish_delete", "finish_and_claim", "delete_and_claim"]
    settling = {statements.__dict__[name].split("), locked AS (", 1)[1] for name in names}
    assert len({text.split("), woken AS (")[0] for text in settling}) == 1
    assert all("GROUP BY queue\n)" in text for text in settling), "the part ends where it should"


def test_a_batch_repeats_only_a_row_of_placeholders():
    assert queries.values("(%s, %s)", 3) == "(%s, %s), (%s, %s), (%s, %s)"


def test_every_lua_script_loads_with_its_helpers():
    for parts in SCRIPTS.values():
        script = queries.lua(*parts)
        assert script.strip()
        if "common" in parts:
            assert "local function now_us()" in script
