"""Values the planner's builders leave to orjson must come out as Strawberry writes them."""

from __future__ import annotations

import datetime as dt

import orjson
from hypothesis import given
from hypothesis import strategies as st


@given(st.datetimes(timezones=st.just(dt.UTC)))
def test_orjson_writes_a_utc_datetime_as_isoformat_does(value: dt.datetime) -> None:
    """asyncpg reads every timestamptz column as a UTC datetime; Strawberry's DateTime
    serialises with isoformat() (microseconds only when not zero)."""
    assert orjson.dumps(value) == orjson.dumps(value.isoformat())
