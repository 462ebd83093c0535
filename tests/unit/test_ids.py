"""Global ids: opaque, URL-safe, routing by the market inside, and every malformed one refused."""

from __future__ import annotations

import base64
import uuid

import pytest

from marketgraph.errors import DomainError, ErrorCode
from marketgraph.ids import GlobalId, decode_id, encode_id

KEY = uuid.UUID("0190b0c4-7a1e-7d3c-9f00-0123456789ab")


def test_an_id_round_trips_type_market_and_key() -> None:
    gid = encode_id("Order", "kg", KEY)
    assert decode_id(gid) == GlobalId("Order", "kg", KEY)
    assert decode_id(gid, "Order") == GlobalId("Order", "kg", KEY)
    assert str(GlobalId("Order", "kg", KEY)) == gid


def test_ids_are_url_safe_and_hide_the_database_key() -> None:
    gid = encode_id("User", "us", KEY)
    assert set(gid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert KEY.hex not in gid and str(KEY) not in gid
    assert "User" not in gid


def test_the_same_key_in_two_markets_or_types_gives_different_ids() -> None:
    ids = {encode_id(t, m, KEY) for t in ("User", "Order") for m in ("kg", "us")}
    assert len(ids) == 4


def test_decoding_checks_the_expected_type_and_names_the_field() -> None:
    gid = encode_id("Product", "kg", KEY)
    with pytest.raises(DomainError) as caught:
        decode_id(gid, "Order", field="orderId")
    assert caught.value.code == ErrorCode.BAD_USER_INPUT
    assert caught.value.extensions == {"field": "orderId"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "nonsense",
        "!!!!",
        "идентификатор",
        str(KEY),
        _b64(b"Order:kg:" + KEY.bytes[:8]),  # key too short
        _b64(b"Order:kg" + KEY.bytes),  # no separator after the market
        _b64(b"Order:kg:x:" + KEY.bytes),  # one part too many
        _b64(b":kg:" + KEY.bytes),  # no type
        _b64(b"Order::" + KEY.bytes),  # no market
        _b64("Заказ:kg:".encode() + KEY.bytes),  # not ASCII
    ],
)
def test_malformed_ids_are_bad_user_input(value: str) -> None:
    with pytest.raises(DomainError) as caught:
        decode_id(value, field="id")
    assert caught.value.code == ErrorCode.BAD_USER_INPUT
    assert caught.value.extensions["field"] == "id"
