"""The ``units`` tool: unit conversion and dimensional analysis with pint.

pint evaluates expressions with its own tokenizer and evaluator (no eval); we additionally
refuse huge or nested exponents, which its evaluator would compute exactly and slowly."""

from __future__ import annotations

import io
import re
import threading
import tokenize

from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool, ToolInputError
from spark_jax.tools.calculator import format_number

_REGISTRY = None
_REGISTRY_LOCK = threading.Lock()
MAX_EXPONENT = 100
MAX_QUERY_CHARS = 500  # with small exponents this keeps exact integer arithmetic cheap
_PAREN_EXPONENT = re.compile(r"\*\*\((-?[0-9]+(?:\.[0-9]*)?)\)")
_SPLIT = re.compile(r"\s+(?:to|in|into|as|->)\s+|\s*->\s*|\s*=>\s*", re.IGNORECASE)


def registry():
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            # deferred: pint is slow to import; a tool worker loads it once, in warm()
            import pint

            _REGISTRY = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
        return _REGISTRY


def check_exponents(text: str) -> None:
    """Refuses exponents that are not small plain numbers (``2**10**10``, ``m**(…)``)."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)]
    except (tokenize.TokenError, IndentationError, SyntaxError) as e:
        raise ToolInputError(f"cannot read the expression: {e}") from None
    for i, tok in enumerate(tokens):
        if tok.string in ("**", "^") and i > 0 and tokens[i - 1].string == ")":
            raise ToolInputError("powers of parenthesized groups are not supported; write m**2/s**2, not (m/s)**2")
        if tok.string in ("**", "^"):
            j = i + 1
            while j < len(tokens) and tokens[j].string in ("-", "+"):
                j += 1
            if j >= len(tokens) or tokens[j].type != tokenize.NUMBER:
                raise ToolInputError("exponents must be plain numbers, e.g. m**2 or s^-1")
            try:
                value = float(tokens[j].string)
            except ValueError:
                raise ToolInputError(f"bad exponent {tokens[j].string!r}") from None
            if abs(value) > MAX_EXPONENT:
                raise ToolInputError(f"exponent {tokens[j].string} is too large (limit {MAX_EXPONENT})")
            if j + 1 < len(tokens) and tokens[j + 1].string in ("**", "^"):
                raise ToolInputError("chained exponents are not supported; use parentheses-free powers")
        elif tok.type == tokenize.NUMBER and len(tok.string) > 60:
            raise ToolInputError("number too long (limit 60 characters)")


def normalize(text: str) -> str:
    """``text`` as pint's preprocessor rewrites it, with ``**(n)`` written ``**n``."""
    if not text:
        return text
    # deferred: see registry()
    from pint.util import string_preprocessor

    return _PAREN_EXPONENT.sub(r"**\1", string_preprocessor(text))


def _fmt(q) -> str:
    return f"{format_number(float(q.magnitude)) if not isinstance(q.magnitude, int) else q.magnitude} {q.units:~P}".strip()


class UnitsTool(Tool):
    name = "units"
    in_worker = True
    description = action_spec("units").description
    argument_format = action_spec("units").argument_format

    def warm(self) -> None:
        registry()

    def _run(self, argument: str, timeout_s: float) -> str:
        # deferred: see registry()
        import pint

        if len(argument) > MAX_QUERY_CHARS:
            raise ToolInputError(f"query longer than {MAX_QUERY_CHARS} characters")
        parts = _SPLIT.split(argument, maxsplit=1)
        source = parts[0].strip()
        target = parts[1].strip() if len(parts) > 1 else ""
        # pint rewrites its input (drops commas, turns superscripts and "squared" into
        # powers): check what it will evaluate, not what was typed.
        source, target = normalize(source), normalize(target)
        for text in (source, target):
            if text:
                check_exponents(text)
        ureg = registry()
        try:
            quantity = ureg.parse_expression(source)
            if not isinstance(quantity, ureg.Quantity):
                quantity = ureg.Quantity(quantity, "dimensionless")
            if target:
                target_q = ureg.parse_expression(target)
                units = target_q.units if isinstance(target_q, ureg.Quantity) else "dimensionless"
                result = quantity.to(units)
                return f"{_fmt(result)}\n(from {_fmt(quantity)}; dimensions {quantity.dimensionality})"
            base = quantity.to_base_units()
            return f"{_fmt(base)}\n(from {_fmt(quantity)}; dimensions {quantity.dimensionality})"
        except pint.DimensionalityError as e:
            raise ToolInputError(f"incompatible dimensions: {e}") from None
        except pint.UndefinedUnitError as e:
            raise ToolInputError(f"unknown unit: {e}") from None
        except (pint.PintError, AttributeError, TypeError, ValueError, SyntaxError,
                tokenize.TokenError, ZeroDivisionError, OverflowError) as e:
            raise ToolInputError(f"cannot evaluate {argument!r}: {e}") from None
