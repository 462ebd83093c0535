"""The documents cache: bounded by entries and by characters, oldest first out; refused
documents keep no tree."""

from __future__ import annotations

from marketgraph.schema import build_schema
from marketgraph.schema.documents import DocumentRules, Documents
from marketgraph.schema.limits import QueryBounds


def test_the_cache_is_bounded_by_entries_and_characters() -> None:
    schema = build_schema()._schema
    documents = Documents(schema, DocumentRules(), max_entries=3, max_cached_chars=200)
    queries = [f"{{ markets {{ code }} }} # {n}" for n in range(5)]
    for query in queries:
        assert not documents.check(query).errors
    assert list(documents._cache) == queries[-3:]  # the oldest went first
    documents.check(queries[2])  # used again: kept over one not used since
    big = "{ markets { code } }" + " " * 150
    documents.check(big)
    assert list(documents._cache) == [queries[2], big]  # 150+ characters pushed out two
    assert documents._chars == sum(map(len, documents._cache))


def test_a_document_refused_for_its_size_keeps_no_tree() -> None:
    rules = DocumentRules(bounds=QueryBounds(max_selections=5))
    documents = Documents(build_schema()._schema, rules)
    checked = documents.check("{ markets { code name currency language phoneRegions } }")
    assert checked.document is None
    [error] = checked.errors
    assert error.extensions == {"code": "QUERY_TOO_COMPLEX"}
    assert error.__traceback__ is None


def test_a_document_too_long_is_refused_without_taking_a_place_in_the_cache() -> None:
    documents = Documents(build_schema()._schema, DocumentRules(max_chars=100))
    documents.check("{ markets { code } }")
    long = "{ markets { code } }" + " " * 200
    [error] = documents.check(long).errors
    assert error.message == "The document has 220 characters; at most 100"
    assert list(documents._cache) == ["{ markets { code } }"]
