"""Aggregates as users write them: ``sum(price * qty) as notional`` -> ``AggregateSpec``.

``parse_aggregate(text)`` reads ``fn(args) [as name]``: ``count``, ``count(*)``,
``count(x)``, ``sum``, ``min``, ``max``, ``avg``, ``count_distinct(x)`` (or
``count(distinct x)``), ``max_by(x, by)``, ``min_by(x, by)``. Arguments are split at
top-level commas (outside parentheses and quotes); each is a column or an expression
of ``ring0.expr``, which ``ring0.operators.aggregates.Plan`` compiles against the input
schema. An aggregate of an expression must be named with ``as``. Errors are
``ConfigError`` naming the text and what would be right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import ConfigError

FUNCTIONS = ("count", "sum", "min", "max", "avg", "count_distinct", "max_by", "min_by")
_ONE_ARG = ("sum", "min", "max", "avg", "count_distinct")
QUOTES = "'\""
WORD = re.compile(r"^\w+$")


@dataclass(frozen=True)
class AggregateSpec:
    """One aggregate: ``fn(column[, by]) as name`` (``name`` defaults to ``fn_column``)."""

    fn: str
    column: str | None = None
    by: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.fn not in FUNCTIONS:
            raise ConfigError(f"aggregate {self.fn!r} is not one of {list(FUNCTIONS)}")
        if self.fn in _ONE_ARG + ("max_by", "min_by") and not self.column:
            raise ConfigError(f"aggregate {self.fn!r} needs a column")
        if self.fn in ("max_by", "min_by") and not self.by:
            raise ConfigError(f"aggregate {self.fn!r} needs a 'by' column: {self.fn}(x, by)")
        if self.by and self.fn not in ("max_by", "min_by"):
            raise ConfigError(f"aggregate {self.fn!r} takes no 'by' column (got {self.by!r})")
        if not self.name:
            default = self.fn if self.column is None else f"{self.fn}_{self.column}"
            object.__setattr__(self, "name", default)

    @property
    def text(self) -> str:
        """The aggregate as a user writes it: ``count(*)``, ``max_by(x, y) as best``."""
        args = ", ".join(a for a in (self.column or "*", self.by) if a)
        default = self.fn if self.column is None else f"{self.fn}_{self.column}"
        return f"{self.fn}({args})" + ("" if self.name == default else f" as {self.name}")


def parse_aggregate(text: str) -> AggregateSpec:
    """``"sum(price) as total"`` -> ``AggregateSpec("sum", "price", None, "total")``.

    An argument is a column or an expression of the expression language (``ring0.expr``;
    ``sum(price * qty) as notional``, ``avg(if(side = 'buy', qty, 0)) as buys``);
    ``count(distinct x)`` is ``count_distinct(x)``. A result computed from an expression
    must be named with ``as``. Expressions are type-checked when the operator is built.
    """
    fn, args, name = _split_call(text)
    if fn == "count" and len(args) == 1 and re.match(r"(?i)distinct\s", args[0]):
        fn, args = "count_distinct", [args[0][len("distinct") :].strip()]
    ok = (
        fn in FUNCTIONS
        and all(args)
        and (
            (fn == "count" and len(args) <= 1)
            or (fn in _ONE_ARG and len(args) == 1 and args[0] != "*")
            or (fn in ("max_by", "min_by") and len(args) == 2 and "*" not in args)
        )
    )
    if not ok:
        raise ConfigError(
            f"{text!r} is not an aggregate; write count, count(*), count(x), sum(x), "
            "min(x), max(x), avg(x), count_distinct(x) or count(distinct x), max_by(x, by) or "
            "min_by(x, by), optionally followed by 'as name'; x and by are columns or "
            "expressions (sum(price * qty) as notional)"
        )
    if not name and any(a != "*" and not WORD.match(a) for a in args):
        raise ConfigError(
            f"{text!r}: an aggregate of an expression needs a name: {text.strip()} as <name>"
        )
    column = args[0] if args and args[0] != "*" else None
    by = args[1] if len(args) == 2 else None
    return AggregateSpec(fn, column, by, name)


def _split_call(text: str) -> tuple[str, list[str], str]:
    """``fn(arg, arg) as name`` -> (fn lowercased, [args], name); ("", [], "") if malformed.

    Arguments are split at top-level commas (outside parentheses and quotes)."""
    m = re.match(r"\s*(\w+)\s*", text) if isinstance(text, str) else None
    if m is None:
        return "", [], ""
    fn, rest = m.group(1).lower(), text[m.end() :]
    args: list[str] = []
    if rest.startswith("("):
        depth, quote, start, end = 0, "", 1, -1
        for i, ch in enumerate(rest):
            if quote:
                quote = "" if ch == quote else quote
            elif ch in QUOTES:
                quote = ch
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    end = i
                    break
            elif ch == "," and depth == 1:
                args.append(rest[start:i].strip())
                start = i + 1
        if end < 0:
            return "", [], ""  # unbalanced
        last = rest[start:end].strip()
        if last or args:
            args.append(last)
        rest = rest[end + 1 :]
    alias = re.fullmatch(r"\s*(?:(?i:as)\s+(\w+))?\s*", rest)
    if alias is None:
        return "", [], ""
    return fn, args, alias.group(1) or ""
