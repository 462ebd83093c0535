"""The test suite's read documents, collected from its source instead of kept by hand.

A hand-kept copy of "every read document the suite sends" goes stale the day a test adds
one, and nothing notices. So the differential test reads the suite itself: every module
under tests/ except tests/planner (whose own documents are `HAND`, written for the planner)
is parsed with `ast`, and every expression that is *constant* — a string literal, a
module-level constant, a name imported from another test module, a name assigned once in
a function, an f-string or a `+` whose parts are all constant, or a JSON request body
(str or bytes) with a "query" — and that parses as a GraphQL document whose operations
are all queries is a suite document. Mutations and subscriptions are left out (the
planner never serves them, and they would change the shared data set); documents that
do not validate against the schema are kept, flagged: they test errors, Strawberry
answers them on both paths, and comparing them is cheap.

Variables come from each operation's variable definitions: by the argument a variable
feeds where it feeds one (`node(id:)` → an id of every type of both markets, `product(id:)`
→ products, `$after` → a real cursor of that connection's rows and a bad one, `$first` →
0, 2, 100, 101, `$phone` → seeded phones, `$search` → prefixes, `$preferences` → filters,
`$market` → "kg", "us" and one that is not a market), otherwise by type and name; each
list has values that miss, and null for nullable variables. Values are `Ref`s to the
seeded data set, resolved per run. Besides those, the literal variables the suite itself
sends with a document (`gql(http, USERS, {"market": "kg", "preferences": [1]})`, or
`(BY_PHONE, {"phone": US_PHONE})` in a parametrize list) are kept as they are. A document
whose `after` variable sits on a connection reached without lists is paged on with the
`endCursor` of its first answer.

`collect()` asserts that it found at least `MINIMUM_DOCUMENTS` valid read documents and
at most `MAXIMUM_VARIABLE_SETS` variable sets, so a collector that breaks cannot silently
empty the corpus, and one that grows cannot silently slow CI down.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

import graphql

from marketgraph.schema import build_schema
from tests.planner.documents import (
    MISSING_ORDER,
    MISSING_PRODUCT,
    MISSING_USER,
    SPACESHIP,
    ZZ_ORDER,
    Doc,
    Ref,
)

TESTS: Final = Path(__file__).resolve().parents[1]
ROOT: Final = TESTS.parent
# tests/planner's own documents are HAND; everything else in tests/ is the suite.
EXCLUDED: Final = (TESTS / "planner",)

# The old hand-kept SUITE had 26 documents; the suite sends about twice as many.
MINIMUM_DOCUMENTS: Final = 40
# Variable sets over all suite documents: each is sent as every caller (and paged on, where
# the document pages), so this bounds the test's time.
MAXIMUM_VARIABLE_SETS: Final = 600
MAX_GENERATED_SETS: Final = 12  # per operation, from the variable definitions
MAX_LITERAL_SETS: Final = 6  # per operation, as the suite sends them


class NotConstantError(Exception):
    """The expression's value is only known when the test runs."""


# --- constants of the test modules ----------------------------------------------------------


def evaluate(node: ast.expr, names: Mapping[str, Any]) -> Any:
    """The value of a constant expression, or `NotConstantError`: literals, known names,
    f-strings of constants (no conversion or format spec), `+` of two strings (or two
    bytes), negative
    numbers, and tuples, lists and dicts of constants."""
    if isinstance(node, ast.Constant):
        if node.value is Ellipsis:
            raise NotConstantError
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise NotConstantError
        return names[node.id]
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                parts.append(part.value)
            elif (
                isinstance(part, ast.FormattedValue)
                and part.conversion == -1
                and part.format_spec is None
            ):
                value = evaluate(part.value, names)
                if not isinstance(value, str | int) or isinstance(value, bool):
                    raise NotConstantError
                parts.append(str(value))
            else:
                raise NotConstantError
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = evaluate(node.left, names), evaluate(node.right, names)
        if isinstance(left, str) and isinstance(right, str):
            return left + right
        if isinstance(left, bytes) and isinstance(right, bytes):
            return left + right
        raise NotConstantError
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = evaluate(node.operand, names)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
        raise NotConstantError
    if isinstance(node, ast.Tuple | ast.List):
        return [evaluate(element, names) for element in node.elts]
    if isinstance(node, ast.Dict):
        result = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**other}
                raise NotConstantError
            name = evaluate(key, names)
            if not isinstance(name, str | int | float | bool | None):
                raise NotConstantError
            result[name] = evaluate(value, names)
        return result
    raise NotConstantError


def module_path(module: str) -> Path | None:
    """The file of a `tests.*` module, or None for anything else."""
    if module != "tests" and not module.startswith("tests."):
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@cache
def module_constants(path: Path) -> Mapping[str, Any]:
    """The names of a module whose values are constant: module-level assignments (in
    order, so a later f-string sees an earlier constant), names imported from other test
    modules, and names assigned exactly once inside its functions (a test's local
    `users = "query ..."`); module-level names win over local ones."""
    names: dict[str, Any] = {}
    tree = parsed(path)
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
            source = module_path(statement.module)
            if source is None or source == path:
                continue
            imported = module_constants(source)
            for alias in statement.names:
                if alias.name in imported:
                    names[alias.asname or alias.name] = imported[alias.name]
            continue
        target, value = _simple_assignment(statement)
        if target is None or value is None:
            continue
        try:
            names[target] = evaluate(value, names)
        except NotConstantError:
            names.pop(target, None)
    local: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                target, value = _simple_assignment(inner)
                if target is not None and value is not None:
                    local.setdefault(target, []).append(value)
    for target, values in local.items():
        if target in names or len(values) != 1:
            continue
        try:
            names[target] = evaluate(values[0], names)
        except NotConstantError:
            continue
    return names


def _simple_assignment(node: ast.AST) -> tuple[str | None, ast.expr | None]:
    """(`name`, value) of `name = value` or `name: T = value`; (None, None) otherwise."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        if isinstance(target, ast.Name):
            return target.id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


# --- documents ------------------------------------------------------------------------------


@dataclass
class Found:
    """A read document of the suite: where it was first seen, its text (the shortest of
    the spellings found, as a test sends it), whether it validates, and the literal
    variable sets tests send with it."""

    source: str  # "api/test_admin.py:54"
    text: str
    document: graphql.DocumentNode
    valid: bool
    literal_sets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def operations(self) -> list[graphql.OperationDefinitionNode]:
        return [
            d for d in self.document.definitions if isinstance(d, graphql.OperationDefinitionNode)
        ]


def request_text(value: Any) -> tuple[str, Any] | None:
    """(document text, variables or None) when `value` is a GraphQL document or a JSON
    request body holding one; None otherwise."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or "{" not in value:
        return None
    if value.lstrip().startswith('{"'):
        try:
            body = json.loads(value)
        except ValueError:
            return None
        if isinstance(body, dict) and isinstance(body.get("query"), str):
            return body["query"], body.get("variables")
        return None
    return value, None


def read_document(text: str) -> graphql.DocumentNode | None:
    """The parsed document when it has operations and all of them are queries with a
    selection (graphql-core reads `{}`, which the grammar does not allow: the suite's
    `b"{}"` is a webhook body, not a document)."""
    try:
        document = graphql.parse(text)
    except graphql.GraphQLError:
        return None
    operations = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    if not operations or any(
        op.operation is not graphql.OperationType.QUERY or not op.selection_set.selections
        for op in operations
    ):
        return None
    return document


def suite_modules() -> list[Path]:
    """Every Python file of the suite outside tests/planner, in a stable order."""
    return sorted(
        path
        for path in TESTS.rglob("*.py")
        if not any(path.is_relative_to(excluded) for excluded in EXCLUDED)
    )


def constant_values(path: Path) -> Iterator[tuple[ast.AST, Any]]:
    """(node, value) of every constant string-valued expression of the module: literals,
    f-strings and concatenations (names are found where they are assigned)."""
    names = module_constants(path)
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp):
            try:
                value = evaluate(node, names)
            except NotConstantError:
                continue
            if isinstance(value, str | bytes):
                yield node, value


def find_documents(schema: graphql.GraphQLSchema) -> dict[str, Found]:
    """The suite's read documents by their printed form (so spellings that differ only in
    whitespace are one document)."""
    found: dict[str, Found] = {}
    for path in suite_modules():
        for node, value in constant_values(path):
            request = request_text(value)
            if request is None:
                continue
            text, variables = request
            document = read_document(text)
            if document is None:
                continue
            key = graphql.print_ast(document)
            entry = found.get(key)
            if entry is None:
                entry = found[key] = Found(
                    source=f"{path.relative_to(TESTS)}:{getattr(node, 'lineno', 0)}",
                    text=text,
                    document=document,
                    valid=not graphql.validate(schema, document),
                )
            elif len(text) < len(entry.text):
                entry.text = text
            if isinstance(variables, dict):
                add_literal_set(entry, variables)
    return found


def add_literal_set(entry: Found, variables: dict[str, Any]) -> None:
    """Keep `variables` for `entry` when it names only declared variables (so a dict
    that happens to sit next to a document, like headers, is not taken for them)."""
    declared = {
        definition.variable.name.value
        for op in entry.operations
        for definition in op.variable_definitions or ()
    }
    if not variables and not declared:
        return
    if not all(isinstance(k, str) for k in variables) or not set(variables) <= declared:
        return
    if variables not in entry.literal_sets and len(entry.literal_sets) < MAX_LITERAL_SETS:
        entry.literal_sets.append(variables)


def harvest_literal_variables(found: Mapping[str, Found]) -> None:
    """The variables the suite sends with its documents, where they are literal: in a
    call, a tuple or a list, a dict after an argument that is a suite document
    (`gql(http, USERS, {"market": "kg"})`, `(BY_PHONE, {"phone": US_PHONE})`, or
    `variables=`), and `{"query": DOC, "variables": {...}}`."""
    for path in suite_modules():
        names = module_constants(path)

        def value_of(node: ast.expr, names: Mapping[str, Any] = names) -> Any:
            try:
                return evaluate(node, names)
            except NotConstantError:
                return None

        def entry_of(value: Any) -> Found | None:
            request = request_text(value)
            if request is None:
                return None
            document = read_document(request[0])
            return found.get(graphql.print_ast(document)) if document is not None else None

        for node in ast.walk(parsed(path)):
            children: Sequence[ast.expr]
            if isinstance(node, ast.Call):
                children = [
                    *node.args,
                    *(k.value for k in node.keywords if k.arg in ("query", "variables")),
                ]
            elif isinstance(node, ast.Tuple | ast.List):
                children = node.elts
            elif isinstance(node, ast.Dict):
                keys = [value_of(k) if k is not None else None for k in node.keys]
                if "query" in keys and "variables" in keys:
                    children = [
                        node.values[keys.index("query")],
                        node.values[keys.index("variables")],
                    ]
                else:
                    continue
            else:
                continue
            entry: Found | None = None
            for child in children:
                value = value_of(child)
                if entry is None:
                    entry = entry_of(value)
                elif isinstance(value, dict):
                    add_literal_set(entry, value)


# --- variables ------------------------------------------------------------------------------


MARKETS: Final = ("kg", "us", "zz")
FIRSTS: Final = (2, 100, 0, 101)
NODE_IDS: Final = (
    Ref("Product.kg", 0),
    Ref("User.us", 1),  # the member of us
    Ref("Order.kg", 0),  # the member of kg's
    Ref("WalletTransaction.us", 2),
    Ref("Product.us", 3),
    Ref("User.kg", 2),  # another user of kg
    Ref("Order.us", 4),  # another user's
    Ref("WalletTransaction.kg", 5),
    Ref("CartItem.kg", 0),  # not a Node
    MISSING_USER,
    SPACESHIP,
    "garbage",
)
PRODUCT_IDS: Final = (
    Ref("Product.kg", 0),
    Ref("Product.us", 4),
    Ref("Order.kg", 0),
    MISSING_PRODUCT,
    "garbage",
)
ORDER_IDS: Final = (
    Ref("Order.kg", 0),
    Ref("Order.us", 1),
    Ref("Order.kg", 4),
    Ref("Order.us", 3),
    Ref("Product.kg", 0),
    ZZ_ORDER,
    MISSING_ORDER,
    "bogus",
)
PHONES: Final = (Ref("phone.kg", 1), Ref("phone.us", 2), "+996700000000", "12")
SEARCHES: Final = ("TEA", "чай", "пря", "green t", "", "zzz")
PREFERENCE_FILTERS: Final[tuple[Any, ...]] = (
    {"notifications": {"sms": True}},
    {"theme": "dark"},
    {},
    {"nested": {"deep": {"x": 1.5}}},
    [1],
)


def cursors(type_name: str) -> tuple[Any, ...]:
    """A real cursor of `type_name` rows in each market, and one that is not a cursor."""
    return (Ref(f"cursor:{type_name}.kg", 1), Ref(f"cursor:{type_name}.us", 2), "x")


# Values by (field, argument) a variable feeds; "*" matches any field.
BY_ARGUMENT: Final[Mapping[tuple[str, str], tuple[Any, ...]]] = {
    ("node", "id"): NODE_IDS,
    ("product", "id"): PRODUCT_IDS,
    ("order", "id"): ORDER_IDS,
    ("market", "code"): ("kg", "us", "US", "zz"),
    ("products", "market"): MARKETS,
    ("users", "market"): MARKETS,
    ("products", "after"): cursors("Product"),
    ("users", "after"): cursors("User"),
    ("orders", "after"): cursors("Order"),
    ("transactions", "after"): cursors("WalletTransaction"),
    ("products", "search"): SEARCHES,
    ("userByPhone", "phone"): PHONES,
    ("users", "preferences"): PREFERENCE_FILTERS,
    ("*", "first"): FIRSTS,
    ("@skip", "if"): (True, False),
    ("@include", "if"): (True, False),
}


def argument_usages(
    operation: graphql.OperationDefinitionNode, document: graphql.DocumentNode
) -> dict[str, list[tuple[str, str]]]:
    """Variable name → the (field or @directive, argument) pairs it is passed to, in the
    operation and in the document's fragments."""
    usages: dict[str, list[tuple[str, str]]] = {}

    def record(owner: str, arguments: Sequence[graphql.ArgumentNode]) -> None:
        for argument in arguments:
            for variable in _variables_in(argument.value):
                usages.setdefault(variable, []).append((owner, argument.name.value))

    class Usages(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> None:
            record(node.name.value, node.arguments or ())

        def enter_directive(self, node: graphql.DirectiveNode, *_: Any) -> None:
            record(f"@{node.name.value}", node.arguments or ())

    graphql.visit(operation, Usages())
    for definition in document.definitions:
        if isinstance(definition, graphql.FragmentDefinitionNode):
            graphql.visit(definition, Usages())
    return usages


def _variables_in(value: graphql.ValueNode) -> Iterator[str]:
    if isinstance(value, graphql.VariableNode):
        yield value.name.value
    elif isinstance(value, graphql.ListValueNode):
        for item in value.values:
            yield from _variables_in(item)
    elif isinstance(value, graphql.ObjectValueNode):
        for object_field in value.fields:
            yield from _variables_in(object_field.value)


def by_type(name: str, type_name: str, schema: graphql.GraphQLSchema) -> tuple[Any, ...]:
    """Values for a variable fed to no argument the table knows: by its type, and for
    strings and ids by its name."""
    lowered = name.lower()
    if type_name in ("String", "ID"):
        if "phone" in lowered:
            return PHONES
        if "search" in lowered:
            return SEARCHES
        if "after" in lowered or "cursor" in lowered:
            return cursors("Product")
        if "market" in lowered or "code" in lowered:
            return MARKETS
        return NODE_IDS[:4] if type_name == "ID" else ("x", "")
    if type_name == "Int":
        return FIRSTS
    if type_name == "Float":
        return (1.5, 0.0)
    if type_name == "Boolean":
        return (True, False)
    if type_name == "JSON":
        return PREFERENCE_FILTERS
    if type_name == "DateTime":
        return ("2025-03-01T12:00:00Z", "yesterday")
    named = schema.type_map.get(type_name)
    if isinstance(named, graphql.GraphQLEnumType):
        return tuple(named.values)
    return ({},)  # an input object or an unknown type: both paths answer the error


def variable_values(
    definition: graphql.VariableDefinitionNode,
    usages: Sequence[tuple[str, str]],
    schema: graphql.GraphQLSchema,
) -> list[Any]:
    """The values to send for one variable: hitting ones first, then misses, then null
    for a nullable one (a list type gets each value as a one-element list)."""
    name = definition.variable.name.value
    type_node: graphql.TypeNode = definition.type
    nullable = not isinstance(type_node, graphql.NonNullTypeNode)
    is_list = False
    while isinstance(type_node, graphql.ListTypeNode | graphql.NonNullTypeNode):
        is_list = is_list or isinstance(type_node, graphql.ListTypeNode)
        type_node = type_node.type
    assert isinstance(type_node, graphql.NamedTypeNode)
    table = next(
        (
            BY_ARGUMENT.get(usage, BY_ARGUMENT.get(("*", usage[1])))
            for usage in usages
            if usage in BY_ARGUMENT or ("*", usage[1]) in BY_ARGUMENT
        ),
        None,
    )
    values: list[Any] = list(
        table if table is not None else by_type(name, type_node.name.value, schema)
    )
    if is_list:
        values = [[value] for value in values]
    if nullable:
        values.append(None)
    return values


def variable_sets(
    operation: graphql.OperationDefinitionNode,
    document: graphql.DocumentNode,
    schema: graphql.GraphQLSchema,
) -> list[dict[str, Any]]:
    """Variable sets for one operation: first the required variables' first values with
    every optional one left out (what most tests send), then row `i` takes each
    variable's `i`-th value (cycling through shorter lists), so every value of every
    variable is sent once without multiplying the lists — at most `MAX_GENERATED_SETS`
    sets (a longer list is cut: its last values, the misses, are the ones left out)."""
    definitions = operation.variable_definitions or ()
    usages = argument_usages(operation, document)
    values = {
        d.variable.name.value: variable_values(d, usages.get(d.variable.name.value, []), schema)
        for d in definitions
    }
    optional = {
        d.variable.name.value
        for d in definitions
        if not isinstance(d.type, graphql.NonNullTypeNode) or d.default_value is not None
    }
    base = {name: options[0] for name, options in values.items() if name not in optional}
    sets = [base]
    rows = max((len(options) for options in values.values()), default=0)
    for i in range(min(rows, MAX_GENERATED_SETS - 1)):
        sets.append({name: options[i % len(options)] for name, options in values.items()})
    unique: list[dict[str, Any]] = []
    for variables in sets:
        if variables not in unique:
            unique.append(variables)
    return unique


def page_path(
    operation: graphql.OperationDefinitionNode, schema: graphql.GraphQLSchema
) -> tuple[tuple[str, ...], str] | None:
    """(response path, variable) of the first connection whose `after` is a variable and
    that is reached through no list (so its `endCursor` is one value to page on with)."""
    info = graphql.TypeInfo(schema)
    stack: list[tuple[str, bool]] = []
    found: list[tuple[tuple[str, ...], str]] = []

    class Paths(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> None:
            output = info.get_type()
            is_list = output is not None and graphql.is_list_type(graphql.get_nullable_type(output))
            stack.append((node.alias.value if node.alias else node.name.value, is_list))
            for argument in node.arguments or ():
                if (
                    argument.name.value == "after"
                    and isinstance(argument.value, graphql.VariableNode)
                    and not any(in_list for _, in_list in stack[:-1])
                ):
                    found.append((tuple(key for key, _ in stack), argument.value.name.value))

        def leave_field(self, *_: Any) -> None:
            stack.pop()

    graphql.visit(operation, graphql.TypeInfoVisitor(info, Paths()))
    return found[0] if found else None


def documents_of(entry: Found, schema: graphql.GraphQLSchema) -> list[Doc]:
    """The requests one suite document makes: per operation (by name when there are
    several, plus once without a name, which must fail alike), its variable sets."""
    operations = entry.operations
    named = len(operations) > 1
    docs = []
    for op in operations:
        if named and op.name is None:
            continue
        declared = {d.variable.name.value for d in op.variable_definitions or ()}
        generated = variable_sets(op, entry.document, schema) if declared else []
        literal = [v for v in entry.literal_sets if set(v) <= declared]
        sets: list[Mapping[str, Any] | None] = [None]
        if declared:
            sets = []
            for variables in [*generated, *literal]:
                if variables not in sets:
                    sets.append(variables)
        if not entry.valid:
            sets = sets[:1]  # the error is the document's: other variables change nothing
        paging = page_path(op, schema) if entry.valid else None
        docs.append(
            Doc(
                f"suite.{entry.source}" + (f" {op.name.value}" if named and op.name else ""),
                entry.text,
                tuple(sets),
                operation_name=op.name.value if named and op.name else None,
                page=paging[0] if paging else None,
                cursor_variable=paging[1] if paging else "after",
            )
        )
    if named:
        docs.append(Doc(f"suite.{entry.source} (no operation name)", entry.text))
    return docs


@dataclass(frozen=True)
class Corpus:
    """The collected suite: its `Doc`s and what was found, for the report."""

    docs: list[Doc]
    valid: int  # distinct documents that validate
    invalid: int  # distinct documents that do not (sent too: errors must agree)
    variable_sets: int

    def describe(self) -> str:
        return (
            f"{self.valid} valid and {self.invalid} invalid read documents found in the suite, "
            f"{len(self.docs)} operations, {self.variable_sets} variable sets"
        )


@cache
def collect() -> Corpus:
    """Every read document of the suite, with its variable sets (asserted not to be
    empty nor to grow past the request budget)."""
    schema = build_schema()._schema
    found = find_documents(schema)
    harvest_literal_variables(found)
    entries = sorted(found.values(), key=lambda e: _source_order(e.source))
    docs = [doc for entry in entries for doc in documents_of(entry, schema)]
    valid = sum(entry.valid for entry in entries)
    corpus = Corpus(
        docs=docs,
        valid=valid,
        invalid=len(entries) - valid,
        variable_sets=sum(len(doc.variables) for doc in docs),
    )
    assert corpus.valid >= MINIMUM_DOCUMENTS, (
        f"the collector found only {corpus.valid} valid read documents in the suite "
        f"(at least {MINIMUM_DOCUMENTS} expected): is tests/planner/corpus.py broken?"
    )
    assert corpus.variable_sets <= MAXIMUM_VARIABLE_SETS, (
        f"{corpus.variable_sets} variable sets: more than the budget of {MAXIMUM_VARIABLE_SETS}"
    )
    return corpus


def _source_order(source: str) -> tuple[str, int]:
    path, _, line = source.rpartition(":")
    return path, int(line)
