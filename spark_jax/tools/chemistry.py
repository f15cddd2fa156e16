"""The ``chemistry`` tool: element properties and molar masses of formulas (periodictable)."""

from __future__ import annotations

import re

from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool, ToolInputError

_PROPS = (
    ("number", "atomic number", ""),
    ("mass", "atomic mass", " g/mol"),
    ("density", "density", " g/cm^3"),
)


def _element(name: str):
    # deferred: periodictable loads its element tables on import
    import periodictable

    key = name.strip()
    for el in periodictable.elements:
        if el.number == 0:
            continue
        if key == el.symbol or key.lower() == el.name.lower():
            return el
    return None


class ChemistryTool(Tool):
    name = "chemistry"
    in_worker = True
    description = action_spec("chemistry").description
    argument_format = action_spec("chemistry").argument_format

    def warm(self) -> None:
        # deferred: see _element
        import periodictable

        periodictable.formula("H2O").mass  # noqa: B018 - loads the element tables

    def _run(self, argument: str, timeout_s: float) -> str:
        # deferred: see _element
        import periodictable

        text = argument.strip()
        if len(text) > 300:  # before the pattern below runs on it
            raise ToolInputError("query longer than 300 characters")
        moles = None
        m = re.match(r"(?i)mass of\s+([0-9.eE+-]+)\s*mol(?:es)?\s+(?:of\s+)?(.+)", text)
        if m:
            try:
                moles = float(m.group(1))
            except ValueError:
                raise ToolInputError(f"bad amount {m.group(1)!r}") from None
            text = m.group(2).strip()
        if len(text) > 200:
            raise ToolInputError("formula longer than 200 characters")
        el = _element(text)
        if el is not None and moles is None:
            lines = [f"{el.name} ({el.symbol})"]
            for attr, label, unit in _PROPS:
                value = getattr(el, attr, None)
                if value is not None:
                    lines.append(f"{label}: {value}{unit}")
            return "\n".join(lines)
        try:
            formula = periodictable.formula(text)
        except (ValueError, TypeError, KeyError) as e:
            raise ToolInputError(
                f"not an element or formula: {text!r} ({e}); write formulas like H2SO4 or CuSO4(H2O)5"
            ) from None
        except Exception as e:  # pyparsing errors
            raise ToolInputError(f"not an element or formula: {text!r} ({type(e).__name__})") from None
        atoms = formula.atoms
        if not atoms:
            raise ToolInputError(f"no elements found in {text!r}")
        if any(n > 1e9 for n in atoms.values()):
            raise ToolInputError("atom counts too large")
        molar = formula.mass
        lines = [f"{formula}: molar mass {molar:.4f} g/mol"]
        if moles is not None:
            lines.append(f"mass of {moles:g} mol: {moles * molar:.4f} g")
        lines.append("composition by mass: " + ", ".join(
            f"{el.symbol} {100 * frac:.2f}%" for el, frac in formula.mass_fraction.items()
        ))
        lines.append("atoms: " + ", ".join(f"{el.symbol} {n:g}" for el, n in atoms.items()))
        return "\n".join(lines)
