"""Signature vectors: raw bytes, the .NET ASCII form, hex case, rotation, wrong secret, empty header."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.signature import dotnet_ascii, header_ok, sign, signature_ok

SECRET = b"test-consumer-secret"
BODY = '{"Product":{"Name":"Crème brûlée 🍰"}}'.encode()


def hexdigest(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_sign_is_lowercase_hex_hmac_sha256() -> None:
    assert sign(b"abc", b"key") == "9c196e32dc0175f86f4b1cb89289d6619de6bee699e4c378e68309ed97a1a6ab"


def test_dotnet_ascii_replaces_each_utf16_unit_with_a_question_mark() -> None:
    # è and û are one UTF-16 unit each; the emoji is a surrogate pair, so two "?".
    assert dotnet_ascii(BODY) == b'{"Product":{"Name":"Cr?me br?l?e ??"}}'


def test_dotnet_ascii_leaves_ascii_bodies_alone() -> None:
    body = b'{"a":1}'
    assert dotnet_ascii(body) is body


def test_dotnet_ascii_turns_invalid_utf8_into_one_question_mark_per_replacement() -> None:
    assert dotnet_ascii(b"a\xffb") == b"a?b"


@pytest.mark.parametrize("form", [lambda b: b, dotnet_ascii], ids=["raw", "ascii-compat"])
def test_both_forms_pass_with_ascii_compat(form: object) -> None:
    header = hexdigest(form(BODY))  # type: ignore[operator]
    assert signature_ok(BODY, header, secrets=[SECRET], ascii_compat=True)


def test_the_ascii_form_fails_without_ascii_compat() -> None:
    assert not signature_ok(BODY, hexdigest(dotnet_ascii(BODY)), secrets=[SECRET], ascii_compat=False)
    assert signature_ok(BODY, hexdigest(BODY), secrets=[SECRET], ascii_compat=False)


def test_a_naive_python_ascii_replace_is_not_the_dotnet_form() -> None:
    naive = BODY.decode().encode("ascii", "replace")  # one "?" for the emoji
    assert not signature_ok(BODY, hexdigest(naive), secrets=[SECRET], ascii_compat=True)


@pytest.mark.parametrize("transform", [str.upper, str.lower, lambda s: f"  {s} "])
def test_hex_case_and_surrounding_space_are_ignored(transform: object) -> None:
    assert signature_ok(BODY, transform(hexdigest(BODY)), secrets=[SECRET], ascii_compat=True)  # type: ignore[operator]


def test_any_configured_secret_passes_during_rotation() -> None:
    old, new = b"old-secret", b"new-secret"
    assert signature_ok(BODY, hexdigest(BODY, old), secrets=[new, old], ascii_compat=True)
    assert signature_ok(BODY, hexdigest(BODY, new), secrets=[new, old], ascii_compat=True)


def test_a_wrong_secret_fails() -> None:
    assert not signature_ok(BODY, hexdigest(BODY, b"wrong"), secrets=[SECRET], ascii_compat=True)


@pytest.mark.parametrize("header", [None, "", "   ", "zz", "é" * 64, hexdigest(BODY)[:-1]])
def test_empty_missing_or_malformed_headers_fail(header: str | None) -> None:
    assert not signature_ok(BODY, header, secrets=[SECRET], ascii_compat=True)


def test_a_changed_body_fails() -> None:
    assert not signature_ok(BODY + b" ", hexdigest(BODY), secrets=[SECRET], ascii_compat=True)


def test_no_secrets_means_nothing_passes() -> None:
    assert not signature_ok(BODY, hexdigest(BODY), secrets=[], ascii_compat=True)


@pytest.mark.parametrize(("offered", "ok"), [
    (b"k-1", True),
    (b" k-1\t", True),  # whitespace around a field value is not part of it (RFC 9110, 5.5)
    (b"k-2", False), (b"K-1", False), (b"k-1x", False), (b"k-", False), (b"k -1", False), (b"k-1\x00", False),
    (None, False), (b"", False)])
def test_custom_header_value_must_match_byte_for_byte_apart_from_surrounding_whitespace(
        offered: bytes | None, ok: bool) -> None:
    assert header_ok(offered, b"k-1") is ok
