"""Request a new GBIF occurrence download (DWCA) from a predicate and wait until it is ready.

    key = request_download(client, predicate, user="me", password="...")   # POST, returns the key
    wait_for_download(client, key)                                         # polls with backoff

Credentials come from ``GBIF_USER`` / ``GBIF_PWD`` (and optionally ``GBIF_EMAIL`` for GBIF's
notification mail) in the environment, never from a command-line flag; they are sent only over
https (plain http only to a loopback test server) and never appear in an error or a log line.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from beam_gbif.core.errors import OptionError
from beam_gbif.io.dwca.meta import DwcaError
from beam_gbif.io.dwca.resolve import DOWNLOAD_KEY
from beam_gbif.io.gbif.client import GbifApiError, GbifClient, check_credentials_url
from beam_gbif.io.option_files import json_or_file

log = logging.getLogger(__name__)

_FINAL_FAILURES = {"FAILED", "KILLED", "CANCELLED", "FILE_ERASED"}


def parse_predicate(text: str) -> dict[str, Any]:
    """``--gbif_download_predicate``: a GBIF predicate object as JSON (or ``@file.json``)."""
    predicate, _ = json_or_file("gbif_download_predicate", str(text).strip())
    if isinstance(predicate, dict) and "type" not in predicate and isinstance(predicate.get("predicate"), dict):
        predicate = predicate["predicate"]  # a whole GBIF request body: keep its predicate
    if not isinstance(predicate, dict) or "type" not in predicate:
        raise OptionError('--gbif_download_predicate must be a GBIF predicate object with a "type", e.g. '
                          '{"type": "equals", "key": "TAXON_KEY", "value": "5352251"}')
    return predicate


def credentials_from_environment() -> tuple[str, str, str]:
    user, password = os.environ.get("GBIF_USER", ""), os.environ.get("GBIF_PWD", "")
    if not user or not password:
        raise OptionError("--gbif_download_predicate needs GBIF_USER and GBIF_PWD in the environment (a gbif.org account)")
    return user, password, os.environ.get("GBIF_EMAIL", "")


def request_download(client: GbifClient, predicate: dict[str, Any], *, user: str, password: str, email: str = "") -> str:
    """``POST {api}/occurrence/download/request``; returns the new download key.

    The credentials go only over https (see ``check_credentials_url``) and never into an error or
    a log line, even when the server echoes them back. Not retried: a retried POST could create a
    second download on GBIF's side.
    """
    body = {
        "creator": user,
        "notificationAddresses": [email] if email else [],
        "sendNotification": bool(email),
        "format": "DWCA",
        "predicate": predicate,
    }
    url = client.url("occurrence/download/request")
    check_credentials_url(url)

    def failure(message: str) -> DwcaError:
        return DwcaError(_without_secrets(message, user, password))

    try:
        response = client.session.post(url, json=body, auth=(user, password), timeout=client.timeout,
                                       headers={"Accept": "text/plain, application/json"})
    except requests.RequestException as exc:
        raise failure(f"could not request a GBIF download at {url}: {exc}") from None
    if response.status_code in (401, 403):
        raise failure(f"GBIF refused the download request for user {user!r}: HTTP {response.status_code} (check GBIF_USER / GBIF_PWD)")
    if response.status_code >= 300:
        raise failure(f"GBIF download request failed: HTTP {response.status_code}: {response.text[:300].strip()}")
    key = response.text.strip().strip('"')
    if not DOWNLOAD_KEY.match(key):
        raise failure(f"GBIF answered the download request with {key[:100]!r}, not a download key")
    log.info("requested GBIF download %s", key)
    return key


def _without_secrets(text: str, user: str, password: str) -> str:
    """``text`` without the password, nor the Basic authorization token that carries it (a server may echo the request)."""
    secrets = [password]
    try:
        secrets.append(base64.b64encode(f"{user}:{password}".encode("latin-1")).decode("ascii"))
    except UnicodeEncodeError:
        pass  # requests encodes Basic credentials as latin-1: no such token could have been sent
    for secret in filter(None, secrets):
        text = text.replace(secret, "[redacted]")
    return text


def wait_for_download(
    client: GbifClient,
    key: str,
    *,
    timeout: float = 6 * 3600,
    first_delay: float = 5.0,
    max_delay: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Polls ``{api}/occurrence/download/{key}`` with growing intervals until SUCCEEDED; returns its metadata."""
    started = time.monotonic()
    delay = first_delay
    while True:
        try:
            metadata = client.get_json(f"occurrence/download/{key}")
        except GbifApiError as exc:
            raise DwcaError(f"could not read the status of GBIF download {key}: {exc}") from None
        status = metadata.get("status")
        if status == "SUCCEEDED":
            return metadata
        if status in _FINAL_FAILURES:
            raise DwcaError(f"GBIF download {key} ended with status {status}")
        waited = time.monotonic() - started
        if waited + delay > timeout:
            raise DwcaError(f"GBIF download {key} is still {status} after {waited:.0f} s; read it later with --dwca {key}")
        log.info("GBIF download %s is %s; checking again in %.0f s", key, status, delay)
        sleep(delay)
        delay = min(delay * 1.5, max_delay)


_requested: dict[tuple[str, str], str] = {}
_requested_lock = threading.Lock()


def download_key_for_predicate(client: GbifClient, predicate_text: str, **wait: Any) -> str:
    """Requests (once per process and predicate) a download and waits for it; returns its key."""
    predicate = parse_predicate(predicate_text)
    memo = (client.api_url, json.dumps(predicate, sort_keys=True))
    with _requested_lock:
        if memo not in _requested:
            user, password, email = credentials_from_environment()
            key = request_download(client, predicate, user=user, password=password, email=email)
            wait_for_download(client, key, **wait)
            _requested[memo] = key
        return _requested[memo]
