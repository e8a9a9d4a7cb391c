"""Parse formula tokens into an AST with a Pratt (precedence-climbing) parser.

Precedences follow R's (``?Syntax``), lowest first: ``~``; ``|`` and ``||``;
binary ``+ -``; ``* /``; ``:``; unary ``- +``; ``^`` (right-associative, ``**`` is
a synonym).  The table below is the whole grammar of operators; the parser is a
single pass over the tokens, so its running time is linear in the formula length.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixedmodels.errors import FormulaError

from .nodes import BinOp, Call, Name, Node, Number, Paren, String, UnaryOp
from .tokens import Kind, Token, tokenize

MAX_NESTING_DEPTH = 100


@dataclass(frozen=True)
class InfixOp:
    """Binding powers of an infix operator (right > left means left-associative)."""

    left_bp: int
    right_bp: int


#: Infix operators: token text -> binding powers.
INFIX_OPERATORS: dict[str, InfixOp] = {
    "~": InfixOp(10, 11),
    "|": InfixOp(20, 21),
    "||": InfixOp(20, 21),
    "+": InfixOp(30, 31),
    "-": InfixOp(30, 31),
    "*": InfixOp(40, 41),
    "/": InfixOp(40, 41),
    ":": InfixOp(50, 51),
    "^": InfixOp(71, 70),
    "**": InfixOp(71, 70),
}

#: Prefix operators: token text -> binding power of the operand.
PREFIX_OPERATORS: dict[str, int] = {"~": 11, "-": 60, "+": 60}

#: Functions a formula may call, with the keyword arguments each accepts.  The
#: meaning of each is given in :mod:`.expand` (R's meaning: ``factor``, ``as.factor``,
#: ``relevel``, ``poly``, ``scale``, ``offset``, ...); nothing here is ever called.
ALLOWED_FUNCTIONS: dict[str, frozenset[str]] = {
    "log": frozenset(),
    "exp": frozenset(),
    "sqrt": frozenset(),
    "scale": frozenset(),
    "center": frozenset(),
    "I": frozenset(),
    "C": frozenset({"ref"}),
    "Treatment": frozenset({"reference"}),
    "factor": frozenset(),
    "as.factor": frozenset(),
    "relevel": frozenset({"ref"}),
    "poly": frozenset({"degree", "raw"}),
    "offset": frozenset(),
    "cbind": frozenset(),
}
_LISTED_FUNCTIONS = (
    "log, exp, sqrt, scale, center, I, C, factor, as.factor, relevel, poly, offset, cbind"
)


def parse_ast(text: str) -> Node:
    """Parse formula ``text`` into an AST (no meaning is attached yet).

    Raises
    ------
    FormulaError
        With the offset of the first syntax problem.
    """
    parser = _Parser(text, tokenize(text))
    node = parser.expression(0)
    parser.expect_end()
    return node


class _Parser:
    def __init__(self, text: str, tokens: list[Token]):
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.open_parens: list[int] = []

    # -- helpers -------------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, pos: int) -> FormulaError:
        return FormulaError(message, formula=self.text, position=pos)

    def describe(self, tok: Token) -> str:
        if tok.kind is Kind.END:
            return "the end of the formula"
        if tok.kind is Kind.STRING:
            return f"the string {tok.text!r}"
        return repr(tok.text)

    def expect_end(self) -> None:
        tok = self.peek()
        if tok.kind is Kind.END:
            return
        if tok.kind is Kind.RPAREN:
            raise self.error(
                "unbalanced parenthesis: ')' has no matching '('; remove it or add a '('",
                tok.pos,
            )
        raise self.error(self.missing_operator(tok), tok.pos)

    def missing_operator(self, tok: Token) -> str:
        if tok.kind is Kind.LPAREN:
            return (
                f"unexpected '(': only the functions {_LISTED_FUNCTIONS} can be called; "
                "did you forget an operator such as '+'?"
            )
        if tok.kind is Kind.EQUALS:
            return (
                "unexpected '=': keyword arguments are only allowed inside a call, "
                "e.g. C(x, ref='level') or poly(x, 2, raw = TRUE)"
            )
        if tok.kind is Kind.COMMA:
            return "unexpected ',' outside a function call"
        return f"unexpected {self.describe(tok)}: missing an operator such as '+' before it?"

    # -- grammar -------------------------------------------------------------------------
    def expression(self, min_bp: int) -> Node:
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            raise self.error(
                f"formula is nested too deeply (more than {MAX_NESTING_DEPTH} levels); simplify it",
                self.peek().pos,
            )
        left = self.prefix()
        while True:
            tok = self.peek()
            if tok.kind is not Kind.OP:
                break
            op = INFIX_OPERATORS[tok.text]
            if op.left_bp < min_bp:
                break
            self.advance()
            if self.peek().kind in (Kind.END, Kind.RPAREN, Kind.COMMA):
                raise self.error(f"operator '{tok.text}' is missing its right-hand side", tok.pos)
            right = self.expression(op.right_bp)
            left = BinOp(tok.text, left, right, tok.pos)
        self.depth -= 1
        return left

    def prefix(self) -> Node:
        tok = self.advance()
        if tok.kind is Kind.OP:
            if tok.text not in PREFIX_OPERATORS:
                raise self.error(f"operator '{tok.text}' is missing its left-hand side", tok.pos)
            if self.peek().kind in (Kind.END, Kind.RPAREN, Kind.COMMA):
                raise self.error(f"operator '{tok.text}' is missing its operand", tok.pos)
            operand = self.expression(PREFIX_OPERATORS[tok.text])
            return UnaryOp(tok.text, operand, tok.pos)
        if tok.kind is Kind.NUMBER:
            return self.no_call_after(Number(tok.text, tok.pos))
        if tok.kind is Kind.STRING:
            return self.no_call_after(String(tok.text, tok.pos))
        if tok.kind is Kind.NAME:
            if self.peek().kind is Kind.LPAREN and not tok.quoted:
                return self.no_call_after(self.call(tok))
            return self.no_call_after(Name(tok.text, tok.pos))
        if tok.kind is Kind.LPAREN:
            if self.peek().kind is Kind.RPAREN:
                raise self.error("empty parentheses '()'", tok.pos)
            inner = self.expression(0)
            closing = self.peek()
            if closing.kind is not Kind.RPAREN:
                if closing.kind is Kind.END:
                    raise self.error(
                        "unbalanced parenthesis: this '(' is never closed; add a ')'", tok.pos
                    )
                raise self.error(self.missing_operator(closing), closing.pos)
            self.advance()
            return self.no_call_after(Paren(inner, tok.pos))
        if tok.kind is Kind.RPAREN:
            raise self.error(
                "unbalanced parenthesis: ')' has no matching '('; remove it or add a '('",
                tok.pos,
            )
        if tok.kind is Kind.END:
            raise self.error("formula is empty or ends too early", tok.pos)
        raise self.error(f"unexpected {self.describe(tok)}", tok.pos)

    def no_call_after(self, node: Node) -> Node:
        tok = self.peek()
        if tok.kind is Kind.LPAREN:
            raise self.error(
                "unexpected '(' after an expression: calling the result of an expression is "
                "not allowed (formulas never run code)",
                tok.pos,
            )
        return node

    def call(self, name_tok: Token) -> Call:
        func = name_tok.text
        if func not in ALLOWED_FUNCTIONS:
            raise self.error(
                f"unknown function '{func}' — allowed: {_LISTED_FUNCTIONS}"
                " (use C(x) to treat x as a factor)",
                name_tok.pos,
            )
        allowed_kw = ALLOWED_FUNCTIONS[func]
        open_tok = self.advance()  # '('
        args: list[Node] = []
        kwargs: list[tuple[str, Node]] = []
        if self.peek().kind is Kind.RPAREN:
            raise self.error(f"{func}() needs an argument", open_tok.pos)
        while True:
            tok = self.peek()
            if tok.kind is Kind.NAME and self.tokens[self.i + 1].kind is Kind.EQUALS:
                if tok.text not in allowed_kw:
                    hint = (
                        f"; {func}() accepts only {', '.join(sorted(allowed_kw))}="
                        if allowed_kw
                        else f"; {func}() takes no keyword arguments"
                    )
                    raise self.error(f"unknown keyword argument '{tok.text}='{hint}", tok.pos)
                if any(k == tok.text for k, _ in kwargs):
                    raise self.error(f"keyword argument '{tok.text}=' given twice", tok.pos)
                self.advance()
                self.advance()
                kwargs.append((tok.text, self.expression(0)))
            else:
                if kwargs:
                    raise self.error("positional argument after a keyword argument", tok.pos)
                args.append(self.expression(0))
            sep = self.peek()
            if sep.kind is Kind.COMMA:
                self.advance()
                continue
            if sep.kind is Kind.RPAREN:
                self.advance()
                break
            if sep.kind is Kind.END:
                raise self.error(
                    f"unbalanced parenthesis: the '(' of {func}(...) is never closed; add a ')'",
                    open_tok.pos,
                )
            raise self.error(self.missing_operator(sep), sep.pos)
        return Call(func, tuple(args), tuple(kwargs), name_tok.pos)
