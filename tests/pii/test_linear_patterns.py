"""No detector pattern can backtrack catastrophically, checked on the patterns themselves (not
by timing them): every repetition is bounded, none refers back to a group, and the repetition
counts multiplied along any nesting stay small. With bounded work per starting position, a
scan is linear in the text. The checker itself is shown to flag the classic catastrophic
forms. Its limit: it does not prove alternatives inside a bounded repetition unambiguous
(`(a|aa){1,100}` passes it); the detectors' repetitions are each delimited by a separator or
a character class the next item cannot match, and `test_detectors.py` scans adversarial
strings. (`benchmarks/pii.py` times adversarial inputs of growing size, outside the tests.)

New patterns are covered automatically: every compiled pattern at module level in the
detector modules, and every registered `PatternDetector`'s, is checked."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import pytest

from tenantguard.pii import addresses, detectors, names
from tenantguard.pii.detectors import PatternDetector, default_detectors

_parser: Any = getattr(re, "_parser")  # noqa: B009 (the stdlib's own regex parser)
_constants: Any = getattr(re, "_constants")  # noqa: B009
MAX_NESTED_PRODUCT = 20_000


def _problems(pattern: str) -> list[str]:
    found: list[str] = []

    def walk(items: Any, product: int) -> None:
        for op, arg in items:
            if op in (_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT):
                _low, high, sub = arg
                if high == _constants.MAXREPEAT:
                    found.append("unbounded repetition")
                    high = 1_000_000
                nested = product * max(high, 1)
                if nested > MAX_NESTED_PRODUCT:
                    found.append(f"nested repetitions multiply to {nested}")
                walk(sub, nested)
            elif op in (_constants.GROUPREF, _constants.GROUPREF_EXISTS):
                found.append("a back-reference")
            elif op == _constants.SUBPATTERN:
                walk(arg[-1], product)
            elif op == _constants.BRANCH:
                for branch in arg[1]:
                    walk(branch, product)
            elif op in (_constants.ASSERT, _constants.ASSERT_NOT):
                walk(arg[1], product)
            elif op == _constants.ATOMIC_GROUP:
                walk(arg, product)

    walk(_parser.parse(pattern), 1)
    return found


def _patterns() -> dict[str, re.Pattern[str]]:
    found: dict[str, re.Pattern[str]] = {}
    modules: list[ModuleType] = [detectors, names, addresses]
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                found[f"{module.__name__}.{name}"] = value
    for index, detector in enumerate(default_detectors()):
        if isinstance(detector, PatternDetector):
            found[f"{detector.pii_class}#{index}"] = detector.pattern
    return found


PATTERNS = _patterns()


def test_every_detector_module_is_covered() -> None:
    assert len(PATTERNS) > 20
    assert any(name.startswith("tenantguard.pii.addresses.") for name in PATTERNS)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_the_pattern_is_linear_by_construction(name: str) -> None:
    assert _problems(PATTERNS[name].pattern) == []


@pytest.mark.parametrize(
    "catastrophic",
    [r"(a+)+$", r"(?:\w*)*@", r"(?:b{1,1000}){1,100}$", r"(\w)\1", r"x.*y"],
)
def test_the_checker_flags_catastrophic_forms(catastrophic: str) -> None:
    assert _problems(catastrophic) != []
