"""`calculate`: arithmetic on an expression, parsed into a syntax tree and walked, never eval'd.

Python's integers have no size limit, so the walk bounds them itself: every whole number,
operands and results alike, has at most MAX_INT_DIGITS digits, and an operation whose result
would be longer is refused before it runs (powers and products by their operands' sizes,
`round` by its digits). Each step then costs microseconds and an expression of MAX_CHARS has
at most a few hundred steps, so a call answers at once or is refused at once.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from gateway.tools.base import Tool, ToolError

Number = int | float
MAX_CHARS = 500
MAX_EXPONENT = 10_000
# Below Python's 4300-digit limit on int-to-text conversion (whose cost grows with the
# square of the digits), so every result can be shown.
MAX_INT_DIGITS = 3000
MAX_INT_BITS = math.floor(MAX_INT_DIGITS * math.log2(10))  # no more digits than that
TOO_LONG = (
    f"The result would be too large: whole numbers are limited to about {MAX_INT_DIGITS:,} digits."
)

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "degrees": math.degrees,
    "radians": math.radians,
    "min": min,
    "max": max,
}


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; ToolError says what is wrong with it."""
    if len(expression) > MAX_CHARS:
        raise ToolError(f"The expression is longer than {MAX_CHARS} characters.")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise ToolError("The expression is not valid arithmetic.") from None
    except (RecursionError, MemoryError):  # the parser's own nesting limits
        raise ToolError("The expression is nested too deeply.") from None
    try:
        result = _value(tree.body)
    except RecursionError:  # e.g. hundreds of unary minus signs in a row
        raise ToolError("The expression is nested too deeply.") from None
    except ZeroDivisionError:
        raise ToolError("Division by zero.") from None
    except (ValueError, OverflowError) as exc:
        raise ToolError(f"The result is undefined or too large ({exc}).") from None
    except TypeError:
        raise ToolError("A function was given the wrong number or kind of arguments.") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise ToolError("The result is too large to represent.")
    return result


def _value(node: ast.expr) -> Number:
    return _bounded(_unchecked_value(node))


def _unchecked_value(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        elif isinstance(node.op, ast.Mult):
            _check_product(left, right)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = _FUNCTIONS.get(node.func.id)
        if function is not None:
            arguments = [_value(arg) for arg in node.args]
            if function is round:
                _check_round(arguments)
            return function(*arguments)
    raise ToolError(
        f"'{ast.unparse(node)[:40]}' is not supported: use numbers, + - * / // % ** "
        f"and {', '.join(sorted(_FUNCTIONS))}."
    )


def _bounded(value: Any) -> Number:
    """`value` if it is a real number the calculator may go on with."""
    if isinstance(value, complex):  # e.g. a fractional power of a negative number
        raise ToolError("The result is not a real number.")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(TOO_LONG)
    return value  # type: ignore[no-any-return]


def _check_power(base: Number, exponent: Number) -> None:
    # Integer powers grow without bound; refuse the ones that would eat the process.
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"Exponents are limited to {MAX_EXPONENT}.")
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) < 2:
        return
    # |base| >= 2 ** (bits - 1), so the power has at least (bits - 1) * exponent + 1 bits.
    if exponent > 0 and (abs(base).bit_length() - 1) * exponent + 1 > MAX_INT_BITS:
        raise ToolError(TOO_LONG)


def _check_product(left: Number, right: Number) -> None:
    # A product has at least bits(left) + bits(right) - 1 bits: refused before it is made.
    if not (isinstance(left, int) and isinstance(right, int) and left and right):
        return
    if left.bit_length() + right.bit_length() - 1 > MAX_INT_BITS:
        raise ToolError(TOO_LONG)


def _check_round(arguments: list[Number]) -> None:
    # round(x, -n) works with 10 ** n, and round(x, n) of a float with n digits.
    digits = arguments[1] if len(arguments) == 2 else 0
    if isinstance(digits, int) and abs(digits) > MAX_INT_DIGITS:
        raise ToolError(f"round() takes at most {MAX_INT_DIGITS:,} digits.")


def format_number(value: Number) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g") if isinstance(value, float) else str(value)


def _calculate(arguments: dict[str, Any]) -> str:
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        raise ToolError("'expression' must be a string such as '2 * (3 + 4)'.")
    return format_number(evaluate(expression))


CALCULATE = Tool(
    name="calculate",
    description=(
        "Evaluate an arithmetic expression exactly: + - * / // % ** (or ^), parentheses, "
        "pi, e, and sqrt, abs, round, floor, ceil, exp, log, log10, log2, sin, cos, tan, "
        "asin, acos, atan, degrees, radians, min, max."
    ),
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. 17.5 * 3 / 4"}},
        "required": ["expression"],
    },
    function=_calculate,
)
