"""Precision, recall and F2 of the detectors per class, on a labelled corpus. Pure.

The criteria are a redactor's:

- a labelled value counts as found (recall) only if spans of its class cover all of it: a
  redaction that leaves half an IBAN has leaked it;
- a detected span counts as right (precision) if it overlaps a labelled value of its class;
  one that overlaps none, or only values of another class, is a false positive.

Findings below their class's default minimum confidence are dropped first, as redaction
does. F2 weighs recall twice as much as precision: for a redactor, a miss costs more than a
false alarm.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tenantguard.pii.corpus import Sample
from tenantguard.pii.detectors import DetectorRegistry, Span
from tenantguard.pii.policy import DEFAULT_MIN_CONFIDENCE


@dataclass(slots=True)
class Counts:
    true_positives: int = 0  # detected spans that overlap a labelled value of their class
    false_positives: int = 0
    found: int = 0  # labelled values wholly covered
    missed: int = 0

    @property
    def precision(self) -> float:
        detected = self.true_positives + self.false_positives
        return self.true_positives / detected if detected else 1.0

    @property
    def recall(self) -> float:
        labelled = self.found + self.missed
        return self.found / labelled if labelled else 1.0

    def f_beta(self, beta: float) -> float:
        p, r = self.precision, self.recall
        if p == 0.0 and r == 0.0:
            return 0.0
        return (1 + beta**2) * p * r / (beta**2 * p + r)

    @property
    def f1(self) -> float:
        return self.f_beta(1.0)

    @property
    def f2(self) -> float:
        return self.f_beta(2.0)


def _covered(start: int, end: int, spans: list[Span]) -> bool:
    position = start
    for span in sorted(spans):
        if span.start <= position < span.end:
            position = span.end
        if position >= end:
            return True
    return position >= end


def score_sample(sample: Sample, spans: Iterable[Span], counts: dict[str, Counts]) -> None:
    """Add `sample`'s outcome (given the detected `spans`) to `counts`, by class."""
    kept = [s for s in spans if s.score >= DEFAULT_MIN_CONFIDENCE]
    for label in sample.labels:
        same = [s for s in kept if s.pii_class == label.pii_class]
        entry = counts.setdefault(label.pii_class, Counts())
        if _covered(label.start, label.end, same):
            entry.found += 1
        else:
            entry.missed += 1
    for span in kept:
        entry = counts.setdefault(span.pii_class, Counts())
        if any(
            label.pii_class == span.pii_class and span.start < label.end and label.start < span.end
            for label in sample.labels
        ):
            entry.true_positives += 1
        else:
            entry.false_positives += 1


def evaluate(
    samples: Iterable[Sample], registry: DetectorRegistry, classes: Iterable[str] | None = None
) -> dict[str, Counts]:
    """Counts per class over `samples`, for the registry's classes (or `classes`)."""
    chosen = registry.classes if classes is None else registry.check_classes(classes)
    counts: dict[str, Counts] = {}
    for sample in samples:
        relevant = [label for label in sample.labels if label.pii_class in chosen]
        score_sample(
            Sample(sample.locale, sample.text, tuple(relevant)),
            registry.scan(sample.text, chosen),
            counts,
        )
    return dict(sorted(counts.items()))
