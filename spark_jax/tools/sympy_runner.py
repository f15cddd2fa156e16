"""Runs one symbolic-math request inside the sandbox. Executed as source text by the sympy tool
(standard library and sympy only); the request is parsed with ``ast`` and built into sympy
objects node by node, so no text is ever handed to eval/sympify."""

import ast
import re

import sympy

OPERATIONS = {
    "solve": sympy.solve, "simplify": sympy.simplify, "diff": sympy.diff,
    "integrate": sympy.integrate, "limit": sympy.limit, "series": sympy.series,
    "factor": sympy.factor, "expand": sympy.expand, "N": lambda e, n=15: sympy.N(e, n),
    "evalf": lambda e, n=15: sympy.N(e, n), "apart": sympy.apart, "together": sympy.together,
    "cancel": sympy.cancel, "trigsimp": sympy.trigsimp, "nsolve": sympy.nsolve,
    "dsolve": sympy.dsolve, "summation": sympy.summation, "product": sympy.product,
    "det": lambda m: sympy.Matrix(m).det(), "inverse": lambda m: sympy.Matrix(m).inv(),
    "eigenvals": lambda m: sympy.Matrix(m).eigenvals(), "rref": lambda m: sympy.Matrix(m).rref()[0],
    "Matrix": sympy.Matrix, "Eq": sympy.Eq, "roots": sympy.roots, "isprime": sympy.isprime,
    "factorint": sympy.factorint, "gcd": sympy.gcd, "lcm": sympy.lcm, "binomial": sympy.binomial,
    "factorial": sympy.factorial, "Rational": sympy.Rational,
    "Derivative": sympy.Derivative, "Integral": sympy.Integral, "Sum": sympy.Sum,
}
FUNCTIONS = {
    name: getattr(sympy, name)
    for name in (
        "sin cos tan cot sec csc asin acos atan atan2 acot sinh cosh tanh asinh acosh atanh "
        "exp log sqrt cbrt root Abs sign floor ceiling re im arg conjugate Min Max gamma "
        "erf Piecewise Heaviside DiracDelta"
    ).split()
}
FUNCTIONS["ln"] = sympy.log
FUNCTIONS["abs"] = sympy.Abs
CONSTANTS = {"pi": sympy.pi, "E": sympy.E, "e": sympy.E, "I": sympy.I, "oo": sympy.oo,
             "inf": sympy.oo, "True": sympy.true, "False": sympy.false}
UNDEFINED_FUNCTIONS = ("f", "g", "h", "y", "u", "v")  # for dsolve: f(x) is an unknown function
MAX_DEPTH = 60


class RequestError(ValueError):
    pass


def _depth(node, limit):
    stack = [(node, 0)]
    while stack:
        n, d = stack.pop()
        if d > limit:
            raise RequestError(f"expression is nested more than {limit} levels deep")
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))


def _binop(op, a, b):
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, ast.Div):
        return a / b
    if isinstance(op, ast.Pow):
        return a**b
    if isinstance(op, ast.Mod):
        return sympy.Mod(a, b)
    if isinstance(op, ast.FloorDiv):
        return sympy.floor(a / b)
    raise RequestError(f"unsupported operator {type(op).__name__}")


def build(node):
    """The sympy object for one AST node (whitelisted node types only)."""
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            return sympy.true if v else sympy.false
        if isinstance(v, int):
            return sympy.Integer(v)
        if isinstance(v, float):
            return sympy.Float(repr(v))
        if isinstance(v, complex):
            return sympy.Float(repr(v.real)) + sympy.Float(repr(v.imag)) * sympy.I
        raise RequestError(f"unsupported constant {v!r}")
    if isinstance(node, ast.Name):
        name = node.id
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in FUNCTIONS or name in OPERATIONS:
            return FUNCTIONS.get(name) or OPERATIONS[name]
        if name.startswith("_") or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", name):
            raise RequestError(f"bad symbol name {name!r}")
        return sympy.Symbol(name)
    if isinstance(node, ast.BinOp):
        return _binop(node.op, build(node.left), build(node.right))
    if isinstance(node, ast.UnaryOp):
        v = build(node.operand)
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return v
        raise RequestError(f"unsupported operator {type(node.op).__name__}")
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [build(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else list(items)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        a, b = build(node.left), build(node.comparators[0])
        op = node.ops[0]
        table = {ast.Eq: sympy.Eq, ast.NotEq: sympy.Ne, ast.Lt: sympy.Lt, ast.LtE: sympy.Le,
                 ast.Gt: sympy.Gt, ast.GtE: sympy.Ge}
        if type(op) in table:
            return table[type(op)](a, b)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise RequestError("only plain function names may be called (no attributes)")
        name = node.func.id
        fn = FUNCTIONS.get(name) or OPERATIONS.get(name)
        if fn is None and name in UNDEFINED_FUNCTIONS:
            fn = sympy.Function(name)
        if fn is None:
            known = ", ".join(sorted(OPERATIONS)) + "; functions: " + ", ".join(sorted(FUNCTIONS))
            raise RequestError(f"unknown function {name!r}; operations: {known}")
        if node.keywords:
            raise RequestError(f"{name}(): keyword arguments are not supported")
        return fn(*[build(a) for a in node.args])
    raise RequestError(f"unsupported syntax: {type(node).__name__}")


def parse_request(text):
    text = text.strip().replace("^", "**")
    if len(text) > 5000:
        raise RequestError("request longer than 5000 characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        # "a = b" (a single equals sign) is an equation
        try:
            tree = ast.parse(re.sub(r"(?<![=<>!])=(?!=)", "==", text), mode="eval")
        except SyntaxError as e:
            raise RequestError(f"not a valid expression: {e.msg} (column {e.offset})") from None
    _depth(tree, MAX_DEPTH)
    return tree.body


def main(request):
    try:
        node = parse_request(request)
        result = build(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in OPERATIONS:
            pass
        elif isinstance(result, sympy.Eq):  # a bare equation: solve it for its unknowns
            unknowns = sorted(result.free_symbols, key=str)
            result = sympy.solve(result, unknowns, dict=True) if len(unknowns) > 1 else sympy.solve(result, *unknowns)
        elif isinstance(result, sympy.Basic) and not isinstance(result, (sympy.Eq, sympy.Rel)):
            result = sympy.simplify(result)
        print(result)
    except RequestError as e:
        raise SystemExit(f"error: {e}")
    except (TypeError, ValueError, NotImplementedError, AttributeError, ZeroDivisionError) as e:
        raise SystemExit(f"error: {type(e).__name__}: {e}")
