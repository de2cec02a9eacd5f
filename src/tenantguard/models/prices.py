"""What a model call costs, for spend budgets. Pure.

Prices are USD per million tokens, input and output apart; spend is counted in micro-USD
(integers), so that a budget of $50 is the limit 50_000_000 of the metric `spend`. Tokens
times a price per million tokens is exactly micro-USD; a fraction rounds up (a budget is
never under-charged).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tenantguard.errors import ConfigurationError
from tenantguard.models.chat import Usage

MAX_PRICE = Decimal(1_000_000)  # USD per million tokens: beyond it, a typo


@dataclass(frozen=True, slots=True)
class Price:
    input: Decimal
    output: Decimal

    def spend(self, usage: Usage) -> int:
        """The call's cost in micro-USD, rounded up."""
        exact = self.input * usage.prompt_tokens + self.output * usage.completion_tokens
        return math.ceil(exact)


def parse_prices(document: Mapping[str, Mapping[str, float]]) -> dict[str, Price]:
    prices: dict[str, Price] = {}
    for model, entry in document.items():
        if not isinstance(entry, Mapping) or set(entry) != {"input", "output"}:
            raise ConfigurationError(f"model_prices[{model!r}] is {{input, output}}.")
        try:
            values = [Decimal(str(entry["input"])), Decimal(str(entry["output"]))]
        except (InvalidOperation, ValueError) as exc:
            raise ConfigurationError(f"model_prices[{model!r}]: prices are numbers.") from exc
        if not all(v.is_finite() and 0 <= v <= MAX_PRICE for v in values):
            raise ConfigurationError(f"model_prices[{model!r}]: from 0 to {MAX_PRICE} per 1M.")
        prices[model] = Price(values[0], values[1])
    return prices
