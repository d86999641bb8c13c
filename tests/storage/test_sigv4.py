"""datashard's SigV4 signer gives the signature botocore's gives for the same request."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from datashard.storage.sigv4 import EMPTY_SHA256, Signer

WHEN = datetime(2026, 3, 1, 23, 59, 58, tzinfo=timezone.utc)

CASES = [
    # method, host, path, query, headers, body
    ("GET", "127.0.0.1:7480", "/bkt/t/data/a.parquet", "", {"Range": "bytes=0-99"}, b""),
    ("GET", "127.0.0.1:7480", "/bkt/odd%20key%2B%2520%C3%A9", "", {"If-Match": '"ab"'}, b""),
    (
        "GET",
        "rgw.internal",
        "/bkt",
        "continuation-token=a%2Fb%3D&encoding-type=url&list-type=2&prefix=t%2Fmetadata%2F",
        {},
        b"",
    ),
    ("HEAD", "127.0.0.1:9000", "/bkt/k~x/y", "", {"x-amz-request-payer": "requester"}, b""),
    (
        "PUT",
        "127.0.0.1:9000",
        "/bkt/t/metadata/v2.metadata.json",
        "",
        {"Content-Length": "11", "If-None-Match": "*", "x-amz-meta-token": "  ab   cd "},
        b"hello world",
    ),
    ("DELETE", "127.0.0.1:9000", "/bkt/k", "", {}, b""),
]


def _botocore(credentials: Credentials, case: tuple[Any, ...], monkeypatch: Any) -> str:
    method, host, path, query, headers, body = case
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: WHEN.replace(tzinfo=None))
    url = f"http://{host}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body or None)
    S3SigV4Auth(credentials, "s3", "eu-west-3").add_auth(request)
    return str(request.headers["Authorization"])


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////session"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[2]}" for c in CASES])
def test_signature_matches_botocores(
    case: tuple[Any, ...], token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    method, host, path, query, headers, body = case
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    ours = Signer(credentials, "eu-west-3").sign(
        method, host, path, query, dict(headers), payload, now=WHEN
    )
    assert ours["Authorization"] == _botocore(credentials, case, monkeypatch)
    assert ours["X-Amz-Date"] == "20260301T235958Z"
    assert ours.get("X-Amz-Security-Token") == token


def test_the_signing_key_follows_the_date_and_rotated_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The derived key is cached, but never used for another day or another secret."""
    first = Credentials("AKIDEXAMPLE", "secret-one")
    signer = Signer(first, "eu-west-3")
    case = CASES[0]
    signer.sign(*case[:5], now=WHEN)
    for when, creds in [
        (datetime(2026, 3, 2, 0, 0, 1, tzinfo=timezone.utc), first),
        (WHEN, Credentials("AKIDEXAMPLE", "secret-two")),
    ]:
        signer._credentials = creds
        ours = signer.sign(*case[:5], now=when)
        monkeypatch.setattr(
            "botocore.auth.get_current_datetime", lambda w=when: w.replace(tzinfo=None)
        )
        request = AWSRequest(method="GET", url=f"http://{case[1]}{case[2]}", headers=case[4])
        S3SigV4Auth(creds, "s3", "eu-west-3").add_auth(request)
        assert ours["Authorization"] == request.headers["Authorization"]
