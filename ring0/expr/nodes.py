"""The syntax tree of an expression: plain, immutable nodes that carry their source position.

The parser builds these; the compiler (``compiler.py``) types them against a
schema and turns them into evaluation closures. ``pos`` is the 0-based
character offset in the expression text of the token that names the node (the
operator for a binary node, the first character for a literal or column), and is
what error messages report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    pos: int


@dataclass(frozen=True)
class Literal(Node):
    value: int | float | str | bool | None


@dataclass(frozen=True)
class Column(Node):
    name: str


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-", "+" or "not"
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # "+ - * / // % || = != < <= > >= and or" ("==" and "<>" are normalised)
    left: Node
    right: Node


@dataclass(frozen=True)
class Call(Node):
    name: str  # lower case
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Cast(Node):
    operand: Node
    type_name: str  # lower case, as written
    type_pos: int


@dataclass(frozen=True)
class Case(Node):
    whens: tuple[tuple[Node, Node], ...]  # (condition, value)
    otherwise: Node | None


@dataclass(frozen=True)
class IsNull(Node):
    operand: Node
    negated: bool


@dataclass(frozen=True)
class InList(Node):
    operand: Node
    items: tuple[Node, ...]
    negated: bool


@dataclass(frozen=True)
class Between(Node):
    operand: Node
    low: Node
    high: Node
    negated: bool


@dataclass(frozen=True)
class Like(Node):
    operand: Node
    pattern: Node
    negated: bool
    ignore_case: bool
