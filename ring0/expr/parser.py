"""Lexer and recursive-descent parser: expression text -> syntax tree (``nodes.py``).

The grammar is written out in the package docstring (``ring0/expr/__init__.py``);
the functions below follow it one precedence level each, lowest first. Every
syntax error is an ``ExpressionError`` that quotes the text and gives the
0-based character position of the offending token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import ExpressionError
from ring0.expr import nodes as n

KEYWORDS = frozenset({
    "and", "or", "not", "is", "null", "in", "between", "like", "ilike",
    "case", "when", "then", "else", "end", "cast", "as", "true", "false",
})  # fmt: skip
_COMPARISONS = {
    "=": "=",
    "==": "=",
    "!=": "!=",
    "<>": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<float>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>\d+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>::|//|\|\||<=|>=|<>|!=|==|[-+*/%(),<>=])
    """,
    re.VERBOSE,
)
_INT64_MAX = 2**63 - 1


def fail(text: str, pos: int, message: str) -> ExpressionError:
    """The one message format: ``expression 'TEXT' at POS: MESSAGE``."""
    return ExpressionError(f"expression {text!r} at {pos}: {message}")


@dataclass(frozen=True)
class Token:
    kind: str  # int float str qident ident keyword op eof
    text: str  # keywords lower case; the source text otherwise
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "'\"":
                kind = "string" if ch == "'" else "quoted identifier"
                raise fail(text, pos, f"unterminated {kind} (no closing {ch})")
            raise fail(text, pos, f"unexpected character {ch!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            word = m.group()
            if kind == "ident" and word.lower() in KEYWORDS:
                tokens.append(Token("keyword", word.lower(), pos))
            else:
                tokens.append(Token(kind, word, pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


def parse(text: str) -> n.Node:
    """Parse a whole expression; trailing tokens are an error."""
    p = _Parser(text)
    node = p.expr()
    p.expect_end()
    return node


def parse_aliased(text: str) -> tuple[n.Node, str, str | None]:
    """Parse ``EXPR [AS NAME]`` (a select item): the tree, EXPR's text and NAME or None."""
    p = _Parser(text)
    node = p.expr()
    end = p.peek().pos
    alias = None
    if p.accept_keyword("as"):
        tok = p.next()
        if tok.kind == "ident":
            alias = tok.text
        elif tok.kind == "qident":
            alias = tok.text[1:-1].replace('""', '"')
        else:
            raise p.unexpected(tok, "a column name after 'as'")
    p.expect_end()
    return node, text[:end].strip(), alias


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # -- token helpers ----------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def accept_keyword(self, word: str) -> Token | None:
        tok = self.peek()
        if tok.kind == "keyword" and tok.text == word:
            return self.next()
        return None

    def accept_op(self, *ops: str) -> Token | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ops:
            return self.next()
        return None

    def expect_keyword(self, word: str) -> Token:
        tok = self.accept_keyword(word)
        if tok is None:
            raise self.unexpected(self.peek(), f"'{word}'")
        return tok

    def expect_op(self, op: str) -> Token:
        tok = self.accept_op(op)
        if tok is None:
            raise self.unexpected(self.peek(), f"'{op}'")
        return tok

    def expect_end(self) -> None:
        tok = self.peek()
        if tok.kind != "eof":
            raise fail(self.text, tok.pos, f"unexpected {tok.text!r} after a complete expression")

    def unexpected(self, tok: Token, wanted: str) -> ExpressionError:
        got = "end of expression" if tok.kind == "eof" else repr(tok.text)
        return fail(self.text, tok.pos, f"expected {wanted}, got {got}")

    # -- grammar, lowest precedence first ---------------------------------------------------
    def expr(self) -> n.Node:
        return self.or_()

    def or_(self) -> n.Node:
        left = self.and_()
        while tok := self.accept_keyword("or"):
            left = n.Binary(tok.pos, "or", left, self.and_())
        return left

    def and_(self) -> n.Node:
        left = self.not_()
        while tok := self.accept_keyword("and"):
            left = n.Binary(tok.pos, "and", left, self.not_())
        return left

    def not_(self) -> n.Node:
        if tok := self.accept_keyword("not"):
            return n.Unary(tok.pos, "not", self.not_())
        return self.predicate()

    def predicate(self) -> n.Node:
        left = self.concat()
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in _COMPARISONS:
                self.next()
                left = n.Binary(tok.pos, _COMPARISONS[tok.text], left, self.concat())
            elif tok.kind == "keyword" and tok.text == "is":
                self.next()
                negated = self.accept_keyword("not") is not None
                self.expect_keyword("null")
                left = n.IsNull(tok.pos, left, negated)
            elif tok.kind == "keyword" and tok.text in ("in", "between", "like", "ilike", "not"):
                negated = tok.text == "not"
                if negated:
                    follow = self.peek(1)
                    if follow.kind != "keyword" or follow.text not in (
                        "in",
                        "between",
                        "like",
                        "ilike",
                    ):
                        return left
                    self.next()
                left = self._special(self.next(), left, negated)
            else:
                return left

    def _special(self, tok: Token, left: n.Node, negated: bool) -> n.Node:
        if tok.text == "in":
            self.expect_op("(")
            items = [self.expr()]
            while self.accept_op(","):
                items.append(self.expr())
            self.expect_op(")")
            return n.InList(tok.pos, left, tuple(items), negated)
        if tok.text == "between":
            low = self.concat()
            self.expect_keyword("and")
            return n.Between(tok.pos, left, low, self.concat(), negated)
        return n.Like(tok.pos, left, self.concat(), negated, tok.text == "ilike")

    def concat(self) -> n.Node:
        left = self.additive()
        while tok := self.accept_op("||"):
            left = n.Binary(tok.pos, "||", left, self.additive())
        return left

    def additive(self) -> n.Node:
        left = self.multiplicative()
        while tok := self.accept_op("+", "-"):
            left = n.Binary(tok.pos, tok.text, left, self.multiplicative())
        return left

    def multiplicative(self) -> n.Node:
        left = self.unary()
        while tok := self.accept_op("*", "/", "//", "%"):
            left = n.Binary(tok.pos, tok.text, left, self.unary())
        return left

    def unary(self) -> n.Node:
        if tok := self.accept_op("-", "+"):
            following = self.peek()
            if tok.text == "-" and following.kind == "int" and int(following.text) == 2**63:
                self.next()  # the one int64 whose absolute value is no int64
                return self.postfix(n.Literal(tok.pos, -(2**63)))
            return n.Unary(tok.pos, tok.text, self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: n.Node) -> n.Node:
        while tok := self.accept_op("::"):
            name = self.type_name()
            node = n.Cast(tok.pos, node, name.text.lower(), name.pos)
        return node

    def type_name(self) -> Token:
        tok = self.next()
        if tok.kind != "ident":
            raise self.unexpected(tok, "a type name")
        return tok

    def primary(self) -> n.Node:
        tok = self.next()
        if tok.kind == "int":
            value = int(tok.text)
            if value > _INT64_MAX:
                raise fail(self.text, tok.pos, f"integer literal {tok.text} is out of int64 range")
            return n.Literal(tok.pos, value)
        if tok.kind == "float":
            return n.Literal(tok.pos, float(tok.text))
        if tok.kind == "str":
            return n.Literal(tok.pos, tok.text[1:-1].replace("''", "'"))
        if tok.kind == "qident":
            return n.Column(tok.pos, tok.text[1:-1].replace('""', '"'))
        if tok.kind == "ident":
            if self.accept_op("("):
                return n.Call(tok.pos, tok.text.lower(), self._arguments())
            return n.Column(tok.pos, tok.text)
        if tok.kind == "keyword":
            if tok.text in ("true", "false"):
                return n.Literal(tok.pos, tok.text == "true")
            if tok.text == "null":
                return n.Literal(tok.pos, None)
            if tok.text == "case":
                return self._case(tok)
            if tok.text == "cast":
                self.expect_op("(")
                operand = self.expr()
                self.expect_keyword("as")
                name = self.type_name()
                self.expect_op(")")
                return n.Cast(tok.pos, operand, name.text.lower(), name.pos)
        if tok.kind == "op" and tok.text == "(":
            node = self.expr()
            self.expect_op(")")
            return node
        raise self.unexpected(tok, "an expression")

    def _arguments(self) -> tuple[n.Node, ...]:
        if self.accept_op(")"):
            return ()
        args = [self.expr()]
        while self.accept_op(","):
            args.append(self.expr())
        self.expect_op(")")
        return tuple(args)

    def _case(self, tok: Token) -> n.Node:
        head = self.peek()
        starts_clause = head.kind == "keyword" and head.text in ("when", "then", "else", "end")
        subject = None if starts_clause else self.expr()
        whens: list[tuple[n.Node, n.Node]] = []
        while when := self.accept_keyword("when"):
            cond = self.expr()
            if subject is not None:  # simple form: case x when v then ... == case when x = v
                cond = n.Binary(when.pos, "=", subject, cond)
            self.expect_keyword("then")
            whens.append((cond, self.expr()))
        if not whens:
            raise self.unexpected(self.peek(), "'when'")
        otherwise = self.expr() if self.accept_keyword("else") else None
        self.expect_keyword("end")
        return n.Case(tok.pos, tuple(whens), otherwise)
