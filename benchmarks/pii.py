"""PII scan: tenantguard's detectors against Microsoft Presidio, same texts, same classes.

The texts are the seeded multi-locale corpus of `tenantguard pii eval` (Faker values in
templates of six languages). The classes are those both ship: email, phone number, payment
card, IBAN, US SSN, IP address (Presidio entity names EMAIL_ADDRESS, PHONE_NUMBER,
CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS).

Presidio is configured offline, exactly so:
- `presidio-analyzer` 2.2.366; `AnalyzerEngine(registry=..., nlp_engine=NoOpNlpEngine(models=
  [{"lang_code": "en", "model_name": "no_op"}]), supported_languages=["en"])`, with
  `RecognizerRegistry(supported_languages=["en"]).load_predefined_recognizers(languages=["en"],
  nlp_engine=that engine)`: its predefined pattern recognizers, no spaCy model (none can be
  downloaded here), hence no context enhancement from lemmas;
- `analyze(text, language="en", entities=[the six])`, one call per text, its default phone
  regions (US, GB, DE, FR, IL, IN, CA, BR);
- `tldextract` (which its email recognizer calls) given `suffix_list_urls=()` so that it uses
  its bundled public suffix list instead of trying the network on first use.

tenantguard runs `DetectorRegistry(default_detectors()).scan(text, the six classes)`. Both run
in this one process, one text at a time, on one core, in interleaved rounds; throughput is the
median over rounds, in characters per second. Quality is scored by `pii.evaluate` (a labelled
value counts as found only when wholly covered) at a minimum score of 0.5 for both, and for
Presidio also at its own default threshold (0: everything it returns); its better F1 is shown.
A second table times both on adversarial inputs of growing size (linear scaling expected).

Run (Presidio is not a dependency of tenantguard; give it its own environment):
  python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[eval]' presidio-analyzer==2.2.366
  .venv-bench/bin/python benchmarks/pii.py [--samples 3000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import tldextract
import tldextract.tldextract
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NoOpNlpEngine

from tenantguard.pii.corpus import Sample, generate
from tenantguard.pii.detectors import DetectorRegistry, Span, default_detectors
from tenantguard.pii.evaluate import Counts, score_sample

SHARED = {
    "email": "EMAIL_ADDRESS",
    "phone_number": "PHONE_NUMBER",
    "payment_card": "CREDIT_CARD",
    "iban": "IBAN_CODE",
    "us_ssn": "US_SSN",
    "ip_address": "IP_ADDRESS",
}
OURS = {v: k for k, v in SHARED.items()}


def presidio_engine() -> AnalyzerEngine:
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


def presidio_scan(engine: AnalyzerEngine, text: str) -> list[Span]:
    results = engine.analyze(text, language="en", entities=list(SHARED.values()))
    return [Span(r.start, r.end, OURS[r.entity_type], float(r.score)) for r in results]


def throughput(scan: Callable[[str], object], texts: Sequence[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        scan(text)
    return sum(map(len, texts)) / (time.perf_counter() - start)


def quality(
    samples: Sequence[Sample], scan: Callable[[str], list[Span]], *, floor: float
) -> dict[str, Counts]:
    counts: dict[str, Counts] = {}
    for sample in samples:
        labels = tuple(label for label in sample.labels if label.pii_class in SHARED)
        spans = [
            # score_sample drops spans under 0.5; lift the kept ones when the floor is lower
            Span(s.start, s.end, s.pii_class, max(s.score, 0.5))
            for s in scan(sample.text)
            if s.score >= floor
        ]
        score_sample(Sample(sample.locale, sample.text, labels), spans, counts)
    return counts


def adversarial(size: int) -> list[str]:
    return [
        ("a" * 63 + "@" + "b." * 40 + " ") * (size // 145 + 1),
        ("1 " * (size // 2)),
        ("+1 (" * (size // 4)),
        ("Dr " + "Ab " * (size // 3)),
        ("12 " + "Main " * (size // 5)),
        ("-----BEGIN PRIVATE KEY-----" + "A" * size),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    samples = list(generate(args.samples, seed=args.seed))
    texts = [s.text for s in samples]
    registry = DetectorRegistry(default_detectors())
    shared = sorted(SHARED)
    engine = presidio_engine()

    def ours(text: str) -> list[Span]:
        return registry.scan(text, shared)

    def theirs(text: str) -> list[Span]:
        return presidio_scan(engine, text)

    theirs(texts[0])  # warm: compiled patterns, the suffix list
    ours(texts[0])
    rates: dict[str, list[float]] = {
        "tenantguard": [],
        "presidio": [],
        "tenantguard (all classes)": [],
    }
    for _ in range(args.rounds):
        rates["tenantguard"].append(throughput(ours, texts))
        rates["presidio"].append(throughput(theirs, texts))
        rates["tenantguard (all classes)"].append(throughput(registry.scan, texts))
    chars = sum(map(len, texts))
    print(f"{len(texts)} texts, {chars} characters, {args.rounds} interleaved rounds, one core\n")
    print("| scanner | median chars/s | slowest round chars/s | / presidio |")
    print("|---|---|---|---|")
    base = statistics.median(rates["presidio"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {min(values):,.0f} | {median / base:.1f}x |")

    ours_q = quality(samples, ours, floor=0.5)
    theirs_q = {floor: quality(samples, theirs, floor=floor) for floor in (0.5, 0.0)}
    print("\n| class | tenantguard P / R / F1 | presidio P / R / F1 (better threshold) |")
    print("|---|---|---|")
    for name in shared:
        mine = ours_q.get(name, Counts())
        best_floor = max(theirs_q, key=lambda f: theirs_q[f].get(name, Counts()).f1)
        other = theirs_q[best_floor].get(name, Counts())
        print(
            f"| {name} | {mine.precision:.3f} / {mine.recall:.3f} / {mine.f1:.3f} |"
            f" {other.precision:.3f} / {other.recall:.3f} / {other.f1:.3f} (>= {best_floor}) |"
        )

    print("\n| adversarial input size | tenantguard ms | presidio ms |")
    print("|---|---|---|")
    for size in (1_000, 10_000, 100_000):
        cases = adversarial(size)
        row = []
        for scan in (registry.scan, theirs):
            start = time.perf_counter()
            for text in cases:
                scan(text)
            row.append((time.perf_counter() - start) * 1000)
        print(f"| {size:,} chars x {len(cases)} | {row[0]:.1f} | {row[1]:.1f} |")


if __name__ == "__main__":
    main()
