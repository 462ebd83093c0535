"""Persisted documents: a request may name its document by id instead of sending its text.

Two kinds, one lookup (`PERSISTED_DOCUMENTS`):

- **Automatic persisted queries** (`apq`, the default; Apollo's protocol): a client sends
  `extensions.persistedQuery.sha256Hash` alone; an unknown hash is answered
  `PERSISTED_QUERY_NOT_FOUND`, and the client sends it again with the document, which is
  registered once its hash is checked and it validates. Registrations live in a bounded
  in-process cache and, with Redis, in the key-value store for every worker and host
  (`REGISTRATION_TTL`, at most `REGISTERED_CHARS_PER_HOUR` characters an hour, so a
  client cannot fill Redis). A read sent by hash over GET is what a CDN can cache.
- **Trusted documents** (`trusted`): only the documents of the manifest that `marketgraph
  documents add` loaded run — by `documentId` (graphql-codegen's client preset, Relay),
  by APQ hash, or as text whose hash is in the manifest; anything else is refused with
  `PERSISTED_DOCUMENT_REQUIRED`. A hostile document never reaches the parser.

The manifest is a JSON file (`PERSISTED_DOCUMENTS_MANIFEST`, default
`DATA_DIR/persisted-documents.json`) of `{id: document}`; every worker reads it at start
and again when an unknown id arrives and the file changed, so `documents add` needs no
restart. In `apq` mode its documents are known hashes from the start. `off` refuses
persisted requests with `PERSISTED_QUERY_NOT_SUPPORTED`, which Apollo's client takes to
send full documents from then on.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from marketgraph.errors import DomainError, ErrorCode, ServiceUnavailableError
from marketgraph.kv import KeyValueStore
from marketgraph.schema.documents import Documents

log = structlog.get_logger(__name__)

Mode = Literal["off", "apq", "trusted"]

REGISTRATION_TTL = 24 * 3600
REGISTERED_CHARS_PER_HOUR = 2_000_000  # in the key-value store, for all workers together
_KV_PREFIX = "apq:"
_SHA256_HEX = re.compile("[0-9a-fA-F]{64}")

# Apollo's messages: its clients compare them, not the codes, in older versions.
NOT_FOUND = "PersistedQueryNotFound"
NOT_SUPPORTED = "PersistedQueryNotSupported"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Manifest:
    """The trusted documents, by their ids and by the SHA-256 of their text (what APQ sends
    and what a full document is checked against)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_id: dict[str, str] = {}
        self._count = 0
        self._stamp: tuple[int, int] | None = None
        self.reload()

    def __len__(self) -> int:
        return self._count

    def get(self, document_id: str) -> str | None:
        found = self._by_id.get(document_id)
        if found is None:
            self.reload()  # `documents add` may have written it since
            found = self._by_id.get(document_id)
        return found

    def has_text(self, query: str) -> bool:
        """Whether `query` is one of the documents (found by its SHA-256)."""
        return self.get(sha256_hex(query)) == query

    def reload(self) -> None:
        """Read the file again when it changed (its size or modification time): a miss
        costs a `stat`, a few microseconds."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._by_id, self._count, self._stamp = {}, 0, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            documents = read_manifest(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error(
                "persisted documents unreadable; keeping the last",
                path=str(self.path),
                error=str(exc),
            )
            return
        self._by_id, self._count = index(documents), len(documents)
        self._stamp = stamp
        log.info("persisted documents loaded", path=str(self.path), documents=len(documents))


def index(documents: Mapping[str, str]) -> dict[str, str]:
    """Each document by its manifest id, its SHA-256 and `sha256:<hex>` (the GraphQL over
    HTTP draft's form of a document id)."""
    by_id: dict[str, str] = {}
    for document_id, text in documents.items():
        digest = sha256_hex(text)
        by_id[digest] = by_id[f"sha256:{digest}"] = text
        by_id[document_id] = text
    return by_id


def read_manifest(raw: bytes) -> dict[str, str]:
    """`{id: document}` from a manifest as graphql-codegen's client preset and Relay write
    it (that object itself), or as Apollo's persisted-query manifest (`operations`, each
    with `id` and `body`); raises ValueError naming what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("operations"), list):
        pairs = []
        for number, operation in enumerate(data["operations"]):
            if not isinstance(operation, dict):
                raise ValueError(f"operations[{number}] is not an object")
            pairs.append((operation.get("id"), operation.get("body")))
    elif isinstance(data, dict):
        pairs = list(data.items())
    else:
        raise ValueError("expected an object of {id: document}")
    documents: dict[str, str] = {}
    for document_id, text in pairs:
        if not isinstance(document_id, str) or not document_id:
            raise ValueError(f"an id is not a string: {document_id!r}")
        if not isinstance(text, str):
            raise ValueError(f"the document of {document_id!r} is not a string")
        documents[document_id] = text
    return documents


def write_manifest(path: Path, documents: Mapping[str, str]) -> None:
    """Write the manifest whole, atomically: a worker reading it sees the old or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(orjson.dumps(dict(documents), option=orjson.OPT_INDENT_2))
    partial.replace(path)


class PersistedDocuments:
    """Resolves a request's document id to its text, under the server's mode."""

    def __init__(
        self,
        mode: Mode,
        manifest_path: Path,
        documents: Documents,
        cache_seconds: int = 60,
        max_entries: int = 1024,
        max_cached_chars: int = 1024 * 1024,
    ) -> None:
        self.mode = mode
        self.cache_seconds = cache_seconds  # public GET answers (graphql_http.cache_control)
        self.manifest = Manifest(manifest_path)
        self._documents = documents
        self._registered: OrderedDict[str, str] = OrderedDict()
        self._max_entries = max_entries
        self._max_chars = max_cached_chars
        self._chars = 0
        if mode == "trusted" and not len(self.manifest):
            log.warning(
                "PERSISTED_DOCUMENTS=trusted and no documents: every request is refused",
                path=str(manifest_path),
            )

    async def resolve(
        self,
        query: str | None,
        document_id: str | None,
        extensions: Mapping[str, Any] | None,
        kv: KeyValueStore,
    ) -> tuple[str, str | None, bool] | None:
        """`(text, id, sent by id alone)` of the request's document, or None when it sent
        its text and names no persisted document; raises a `DomainError` for a document
        this server does not run."""
        apq_hash = _apq_hash(extensions)
        if apq_hash is None and document_id is None:
            if self.mode == "trusted" and query is not None and not self.manifest.has_text(query):
                raise DomainError(
                    ErrorCode.PERSISTED_DOCUMENT_REQUIRED,
                    "This server runs only its trusted documents: send a documentId "
                    "from its manifest",
                )
            return None
        if self.mode == "off":
            raise DomainError(ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED, NOT_SUPPORTED)
        wanted = document_id or apq_hash
        assert wanted is not None
        if query is not None:
            if apq_hash is not None and sha256_hex(query) != apq_hash:
                raise DomainError(
                    ErrorCode.BAD_USER_INPUT,
                    "provided sha does not match query",
                )
            if self.mode == "trusted":
                if not self.manifest.has_text(query):
                    raise DomainError(ErrorCode.PERSISTED_QUERY_NOT_FOUND, NOT_FOUND)
            elif apq_hash is not None:
                await self._register(apq_hash, query, kv)
            return query, wanted, False
        text = self.manifest.get(wanted)
        if text is None and self.mode == "apq":
            text = await self._registration(wanted, kv)
        if text is None:
            raise DomainError(ErrorCode.PERSISTED_QUERY_NOT_FOUND, NOT_FOUND)
        return text, wanted, True

    async def _registration(self, digest: str, kv: KeyValueStore) -> str | None:
        text = self._registered.get(digest)
        if text is not None:
            self._registered.move_to_end(digest)
            return text
        if kv.backend == "memory":  # one process: the cache above is the whole registry
            return None
        try:
            text = await kv.get(_KV_PREFIX + digest)
        except ServiceUnavailableError:
            return None  # not found: the client sends the document, which runs without it
        if text is not None and sha256_hex(text) == digest:
            self._remember(digest, text)
            return text
        return None

    async def _register(self, digest: str, query: str, kv: KeyValueStore) -> None:
        """Keep a document sent with its hash, once it validates (junk is not stored)."""
        if digest in self._registered or self.manifest.get(digest) is not None:
            return
        checked = await self._documents.check_async(query)
        if checked.document is None or checked.errors:
            return
        self._remember(digest, query)
        if kv.backend == "memory":
            return
        hour = int(time.time() // 3600)
        try:
            spent = await kv.incr(f"{_KV_PREFIX}budget:{hour}", ttl=3600, amount=len(query))
            if spent <= REGISTERED_CHARS_PER_HOUR:
                await kv.set(_KV_PREFIX + digest, query, ttl=REGISTRATION_TTL)
            else:
                log.warning("persisted query registrations over budget this hour; not shared")
        except ServiceUnavailableError:
            pass  # kept by this worker; others ask for the document once more

    def _remember(self, digest: str, text: str) -> None:
        self._registered[digest] = text
        self._chars += len(text)
        while len(self._registered) > self._max_entries or self._chars > self._max_chars:
            _, evicted = self._registered.popitem(last=False)
            self._chars -= len(evicted)


def _apq_hash(extensions: Mapping[str, Any] | None) -> str | None:
    """The SHA-256 (hex) of `extensions.persistedQuery`; a malformed one is refused."""
    if not extensions or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise DomainError(
            ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED,
            NOT_SUPPORTED,
            reason="extensions.persistedQuery must be {version: 1, sha256Hash}",
        )
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or _SHA256_HEX.fullmatch(digest) is None:
        raise DomainError(
            ErrorCode.BAD_USER_INPUT,
            "extensions.persistedQuery.sha256Hash must be 64 hexadecimal digits",
        )
    return digest.lower()
