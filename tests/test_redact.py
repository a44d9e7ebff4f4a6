"""Redaction of e-mails, phone and card numbers and keys in logs and transcripts."""

from __future__ import annotations

import io
import json
import re

import pytest
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st

from realtime_voicebot.redact import luhn_valid, redact, redact_processor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.doe+tag@example.co.uk today", "write to [email] today"),
        ("<ANNA_99@Mail.Example.org>", "<[email]>"),
        ("call +49 151 12345678 now", "call [phone] now"),
        ("call +4915112345678", "call [phone]"),
        ("(030) 1234567", "[phone]"),
        ("+1 (415) 555-2671", "[phone]"),
        ("0151-1234567 or 0049 151 1234567", "[phone] or [phone]"),
        ("01.23.45.67.89", "[phone]"),
        ("card 4111 1111 1111 1111.", "card [card]."),
        ("4111-1111-1111-1111 and 4111111111111111", "[card] and [card]"),
        ("amex 3782 822463 10005", "amex [card]"),
        ("key sk-proj-abcDEF1234567890ghijklmnop", "key [key]"),
        ("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx", "OPENAI_API_KEY=[key]"),
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.SflKxwRJ", "Authorization: Bearer [key]"),
        ("token ghp_1234567890abcdefABCDEFghijklmnopqrstuv end", "token [key] end"),
        ("sha 0123456789abcdef0123456789abcdef", "sha [key]"),
        ("aws wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws [key]"),
    ],
)
def test_redacts(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "at 10:30 on 2024-05-01",
        "2024-05-01T10:30:00 and 01.05.2024 and 2024/05/01",
        "room 42",
        "code 1234, call 112",
        "in 1999 and 2024",
        "order 12345678",
        "ip 192.168.1.10",
        "not a card: 4111 1111 1111 1112",  # fails the Luhn check
        "version 1.2.3 of item_CJ7xYZabc123",
        "path /tmp/pytest-of-root/pytest-3/cwd0/transcript.jsonl",
        "/home/User/Projects2024/realtime/voicebot",
        "the bearer instruments",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "Donaudampfschifffahrtsgesellschaftskapitaen",
        "ServerEventType.FUNCTION_ARGUMENTS_DELTA",
        "no @ here, user@localhost",
    ],
)
def test_leaves_alone(text: str) -> None:
    assert redact(text) == text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_processor_redacts_nested_values() -> None:
    event = {
        "event": "mail from a.b@example.com",
        "user": {"phone": "+49 151 12345678", "cards": ["4111 1111 1111 1111", 42]},
        "keys": ("sk-abcdefghijklmnopqrstuvwx",),
        "count": 3,
        "ok": None,
    }
    assert redact_processor(None, "info", event) == {
        "event": "mail from [email]",
        "user": {"phone": "[phone]", "cards": ["[card]", 42]},
        "keys": ("[key]",),
        "count": 3,
        "ok": None,
    }


def test_processor_in_a_structlog_chain() -> None:
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[redact_processor, structlog.processors.JSONRenderer()],
    )
    logger.info("key sk-abcdefghijklmnopqrstuvwx used", who={"email": "x@example.com"})
    assert json.loads(out.getvalue()) == {"event": "key [key] used", "who": {"email": "[email]"}}


# --- properties ---------------------------------------------------------------------------------


def _with_check_digit(body: str) -> str:
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return body + digit
    raise AssertionError("unreachable")


luhn16 = st.text("0123456789", min_size=15, max_size=15).map(_with_check_digit)
pieces = st.one_of(
    st.text("0123456789 -+.()/:@_abcxyzXYZ", max_size=12),
    luhn16,
    luhn16.map(lambda d: " ".join(d[i : i + 4] for i in range(0, 16, 4))),
    st.sampled_from(
        [
            "a.b@example.com",
            "+49 151 12345678",
            "2024-05-01",
            "10:30",
            "sk-abcdefghijklmnop1234",
            "Bearer abc123def456",
            " ",
            "+",
        ]
    ),
)
texts = st.lists(pieces, max_size=8).map("".join)


def luhn_runs(text: str) -> list[str]:
    return [run for run in re.findall(r"\d+", text) if len(run) == 16 and luhn_valid(run)]


@settings(max_examples=400, deadline=None)
@given(texts)
@example("+4111111111111111")
@example("4111111111111111 22")
@example("12345678 4111111111111111")
def test_idempotent_and_no_card_left(text: str) -> None:
    once = redact(text)
    assert redact(once) == once
    assert luhn_runs(once) == []
