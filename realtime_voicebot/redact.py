"""Privacy redaction for logs and the transcript file (never for what is sent to the model).

`redact` replaces e-mail addresses, API keys and tokens, payment card numbers (Luhn-checked)
and phone numbers with ``[email]``, ``[key]``, ``[card]`` and ``[phone]``. It is a heuristic:
it errs towards redacting long digit groups with separators, and leaves dates, times, IPv4
addresses and short numbers alone. `redact_processor` applies it to every string of a
structlog event.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

EMAIL = "[email]"
PHONE = "[phone]"
CARD = "[card]"
KEY = "[key]"

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
)

_TOKEN_CHARS = r"A-Za-z0-9+/_\-"  # base64, base64url, hex; "=" only as trailing padding
_BEARER = re.compile(rf"\b(Bearer)(\s+)([{_TOKEN_CHARS}.~=]{{8,}})", re.IGNORECASE)
_SK_KEY = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{16,}")
_LONG_TOKEN = re.compile(
    rf"(?<![{_TOKEN_CHARS}])[{_TOKEN_CHARS}]{{32,}}={{0,2}}(?![{_TOKEN_CHARS}=])"
)

_DIGIT_GROUPS = re.compile(r"(?<!\d)\d+(?:[ -]\d+)*(?!\d)")

# Shapes kept as they are before looking for phone numbers: dates, times, IPv4 addresses.
_KEEP = (
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
    r"|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}(?![\d./-])"
    r"|\d{1,3}(?:\.\d{1,3}){3}(?![\d.])"
    r"|\d{1,2}:\d{2}(?::\d{2})?"
)
_PHONE_OR_KEEP = re.compile(
    rf"(?<![\w+/.-])(?:(?P<keep>{_KEEP})|(?P<phone>(?:\+|(?=\()|\b)"
    r"(?:\(\d{1,5}\)|\d{1,5})(?:[ .\-/]?(?:\(\d{1,5}\)|\d{1,5})){1,7}))(?![\w])"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_token(candidate: str) -> bool:
    """A long run looks like a secret: hex with letters and digits, or mixed-case base64."""
    if re.fullmatch(r"[0-9a-fA-F]+", candidate):
        return bool(re.search(r"\d", candidate) and re.search(r"[a-fA-F]", candidate))
    if not (
        re.search(r"[a-z]", candidate)
        and re.search(r"[A-Z]", candidate)
        and re.search(r"\d", candidate)
    ):
        return False
    # A path such as /home/User/Project2/src is made of short segments; keys are not.
    return max(len(part) for part in candidate.split("/")) >= 16


def _redact_bearer(match: re.Match[str]) -> str:
    credential = match.group(3)
    if len(credential) >= 20 or any(c.isdigit() for c in credential):
        return f"{match.group(1)}{match.group(2)}{KEY}"
    return match.group()  # prose: "the bearer instruments"


def _redact_tokens(text: str) -> str:
    text = _BEARER.sub(_redact_bearer, text)
    text = _SK_KEY.sub(KEY, text)
    return _LONG_TOKEN.sub(lambda m: KEY if _is_token(m.group()) else m.group(), text)


def _card_span(groups: list[str], separators: list[str], after_plus: bool) -> bool:
    digits = "".join(groups)
    # After a "+" up to 15 digits (the E.164 maximum) are a phone number.
    if not (16 if after_plus else 13) <= len(digits) <= 19:
        return False
    if len(groups) > 1 and (len(set(separators)) > 1 or min(map(len, groups)) < 3):
        return False
    return luhn_valid(digits)


def _redact_cards(match: re.Match[str]) -> str:
    """Within digit groups joined by single spaces or dashes, replace each card number."""
    run = match.group()
    after_plus = match.start() > 0 and match.string[match.start() - 1] == "+"
    groups = re.split(r"[ -]", run)
    separators = re.findall(r"[ -]", run)
    out: list[str] = []
    i = 0
    while i < len(groups):
        for j in range(len(groups) - 1, i - 1, -1):
            if _card_span(groups[i : j + 1], separators[i:j], after_plus and i == 0):
                out.append(CARD)
                if j + 1 < len(groups):
                    out.append(separators[j])
                i = j + 1
                break
        else:
            out.append(groups[i])
            if i < len(separators):
                out.append(separators[i])
            i += 1
    return "".join(out)


def _redact_phone(match: re.Match[str]) -> str:
    found = match.group()
    if match.group("keep") is not None:
        return found
    digits = sum(c.isdigit() for c in found)
    international = found.startswith(("+", "00"))
    separated = any(not c.isdigit() for c in found)
    if 8 <= digits <= 15 and (international or separated):
        return PHONE
    return found


def _redact_once(text: str) -> str:
    text = _EMAIL.sub(EMAIL, text)
    text = _redact_tokens(text)
    text = _DIGIT_GROUPS.sub(_redact_cards, text)
    return _PHONE_OR_KEEP.sub(_redact_phone, text)


def redact(text: str) -> str:
    """``text`` with e-mails, keys and tokens, card and phone numbers replaced by markers."""
    for _ in range(3):  # until stable: a replacement can expose a neighbour to another rule
        redacted = _redact_once(text)
        if redacted == text:
            break
        text = redacted
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_redact_value(item) for item in value)
    return value


def redact_processor(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact every string value, recursively into dicts and lists."""
    for key, value in event_dict.items():
        event_dict[key] = _redact_value(value)
    return event_dict
