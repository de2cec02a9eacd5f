"""PII detectors, one per class, behind one small interface, in an explicit registry. Pure.

A detector finds spans of one class in a text and scores each (pattern, then checksum, then
context words nearby). The registry is built from an allow-list of detectors: asking for a
class it does not hold is an error (`UnknownPiiClass`), never a silent "nothing found".

Every pattern is linear-time by construction: bounded repetitions, no nested quantifiers over
overlapping alternatives, so an adversarial input cannot make a scan backtrack for long.

Threat stopped: personal data and credentials reaching models, logs or other parties
unnoticed (what happens to what is found is the sentinel's policy, per tenant and channel).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import phonenumbers

from tenantguard.errors import RequestInvalid
from tenantguard.identity import apikeys

CONTEXT_WINDOW = 48  # characters before a match searched for context words


class UnknownPiiClass(RequestInvalid):
    code = "unknown_pii_class"
    title = "Unknown PII class"
    default_detail = "The request names a PII class that no detector handles."


@dataclass(frozen=True, slots=True, order=True)
class Span:
    start: int
    end: int
    pii_class: str
    score: float  # 0..1: how sure the detector is


class Detector(Protocol):
    """Finds spans of one class."""

    @property
    def pii_class(self) -> str: ...

    def detect(self, text: str) -> Iterable[Span]: ...


@dataclass(frozen=True, slots=True)
class PatternDetector:
    """A pattern, an optional validator (a checksum: a match that fails it is dropped), a
    base score, and context words that raise it when they occur just before the match."""

    pii_class: str
    pattern: re.Pattern[str]
    score: float
    validate: Callable[[str], bool] | None = None
    context: tuple[str, ...] = ()
    context_boost: float = 0.15
    group: int = 0
    require_context: bool = False  # forms too generic alone (passport numbers, dates)

    def detect(self, text: str) -> Iterable[Span]:
        lowered = text.lower() if self.context else ""
        for match in self.pattern.finditer(text):
            value = match.group(self.group)
            if not value or (self.validate is not None and not self.validate(value)):
                continue
            start, end = match.span(self.group)
            score = self.score
            if self.context:
                before = lowered[max(0, start - CONTEXT_WINDOW) : start]
                if any(word in before for word in self.context):
                    score = min(1.0, score + self.context_boost)
                elif self.require_context:
                    continue
            yield Span(start, end, self.pii_class, score)


_PHONE = re.compile(
    r"(?<![\w+#/.,-])(?:\+|00)?\(?\d[\d ().\-/]{5,20}\d"
    r"(?: ?(?:x|ext\.?|#) ?\d{1,6})?(?![\w/-]|[.,]\d)"
)
_EXTENSION = re.compile(r" ?(?:x|ext\.?|#) ?\d{1,6}$")
# Shapes that other classes own, or that are not phone numbers: IPv4, amounts, dates, SSNs.
_NOT_PHONE = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}|\d{1,24}[.,]\d{1,2}|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
    r"|\d{3}-\d{2}-\d{4}"
)
_PHONE_CONTEXT = (
    "phone", "tel", "call", "mobile", "cell", "fax", "whatsapp", "sms", "reach", "ring",
    "téléphone", "portable", "numéro", "telefon", "handy", "rufnummer", "teléfono", "móvil",
    "telefono", "cellulare", "telefoon", "mobiel", "bel ",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PhoneDetector:
    """Phone numbers: a candidate of 7 to 15 digits in a phone's shape, then the
    `phonenumbers` library (Google's libphonenumber metadata) decides: a number valid in
    international form or in one of the listed regions scores 0.85; one only possible there
    scores 0.45, under the default threshold unless a context word ("phone", "tel", …) raises
    it. Bare digit strings (order numbers, ids) need a context word; IPv4 addresses, amounts,
    dates, SSN shapes and a last group of one digit are never phone numbers."""

    regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "IT", "NL")
    pii_class: str = "phone_number"
    pattern: re.Pattern[str] = _PHONE  # every span is a match of it (the registry's prefilter)

    def detect(self, text: str) -> Iterable[Span]:
        lowered: str | None = None
        for match in self.pattern.finditer(text):
            value = match.group()
            number = _EXTENSION.sub("", value)
            digits = sum(c.isdigit() for c in number)
            if not 7 <= digits <= 15 or _NOT_PHONE.fullmatch(number):
                continue
            groups = re.split(r"\D+", number.rstrip(")"))
            if len(groups[-1]) < 2:
                # A last group of one digit: a switchboard's extension ("+49 30 901820-0") when
                # what comes before is a valid international number and a dash; else no phone.
                head = number[: number.rfind(groups[-1])]
                international = number.startswith(("+", "00"))
                if not (international and head.endswith("-") and self._score(head[:-1]) == 0.85):
                    continue
            if lowered is None:
                lowered = text.lower()
            before = lowered[max(0, match.start() - CONTEXT_WINDOW) : match.start()]
            context = any(word in before for word in _PHONE_CONTEXT)
            bare = number.isdigit()
            if bare and not context:
                continue
            score = self._score(number)
            if score is None:
                continue
            if context:
                score = min(1.0, score + 0.15)
            yield Span(match.start(), match.end(), self.pii_class, score)

    def _score(self, number: str) -> float | None:
        international = number.startswith(("+", "00"))
        candidate = "+" + number[2:] if number.startswith("00") else number
        best: float | None = None
        for region in (None,) if international else self.regions:
            try:
                parsed = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed):
                return 0.85
            if phonenumbers.is_possible_number(parsed):
                best = 0.45  # below the default threshold: found only with a context word
        return best


@dataclass(frozen=True, slots=True)
class GroupedDetector:
    """A value written in groups (cards, IBANs): within each loose match, the longest run of
    whole groups that passes the checksum, so that digits or a word written right after the
    value (an expiry date, a BIC, a currency) cannot make the whole value fail it."""

    pii_class: str
    pattern: re.Pattern[str]
    separator: re.Pattern[str]
    score: float
    validate: Callable[[str], bool]
    min_chars: int
    max_chars: int
    context: tuple[str, ...] = ()

    def detect(self, text: str) -> Iterable[Span]:
        lowered = text.lower() if self.context else ""
        for match in self.pattern.finditer(text):
            found = self._best(match.group())
            if found is None:
                continue
            start, end = match.start() + found[0], match.start() + found[1]
            score = self.score
            before = lowered[max(0, start - CONTEXT_WINDOW) : start]
            if any(word in before for word in self.context):
                score = min(1.0, score + 0.1)
            yield Span(start, end, self.pii_class, score)

    def _best(self, value: str) -> tuple[int, int] | None:
        bounds: list[tuple[int, int]] = []
        position = 0
        for sep in self.separator.finditer(value):
            bounds.append((position, sep.start()))
            position = sep.end()
        bounds.append((position, len(value)))
        # Runs from the first group only: a number cut out of the middle of a longer one is
        # more often an accident of digits than a value.
        for j in range(len(bounds), 0, -1):
            compact = "".join(value[a:b] for a, b in bounds[:j])
            if self.min_chars <= len(compact) <= self.max_chars and self.validate(compact):
                return bounds[0][0], bounds[j - 1][1]
        return None


def luhn(value: str) -> bool:
    digits = [int(c) for c in value if c.isdigit()]
    if not 12 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if position % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


_ISSUERS = re.compile(
    r"4\d{12}(?:\d{3}){0,2}"  # Visa: 13, 16, 19
    r"|5[1-5]\d{14}|2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # American Express
    r"|6(?:011|5\d\d|4[4-9]\d)\d{12}(?:\d{3})?"  # Discover
    r"|35(?:2[89]|[3-8]\d)\d{12}(?:\d{3})?"  # JCB
    r"|3(?:0[0-5]|[68]\d)\d{11}"  # Diners Club
    r"|(?:2131|1800)\d{11}"  # JCB, 15-digit
    r"|(?:5[06-9]|6\d)\d{10,17}"  # Maestro: 12 to 19 digits
)


def payment_card(value: str) -> bool:
    digits = "".join(c for c in value if c.isdigit())
    return bool(_ISSUERS.fullmatch(digits)) and luhn(digits)


_IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "CH": 21, "CZ": 24, "DE": 22, "DK": 18, "ES": 24, "FI": 18,
    "FR": 27, "GB": 22, "GR": 27, "IE": 22, "IT": 27, "LU": 20, "NL": 18, "NO": 15,
    "PL": 28, "PT": 25, "SE": 24,
}  # fmt: skip


def iban(value: str) -> bool:
    compact = value.replace(" ", "").replace("-", "").upper()
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34 or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def de_tax_id(value: str) -> bool:
    """German Steuer-ID: 11 digits, no leading zero, ISO 7064 MOD 11,10 check digit."""
    digits = value.replace(" ", "")
    if len(digits) != 11 or not digits.isdigit() or digits[0] == "0":
        return False
    product = 10
    for c in digits[:10]:
        total = (int(c) + product) % 10 or 10
        product = (total * 2) % 11
    check = (11 - product) % 10
    return check == int(digits[10])


def fr_nir(value: str) -> bool:
    """French social security number: 13 characters and a key, 97 - (number mod 97); Corsican
    departments 2A / 2B count as 19 / 18."""
    compact = value.replace(" ", "").upper()
    if len(compact) != 15:
        return False
    body = compact[:13].replace("2A", "19").replace("2B", "18")
    return body.isdigit() and compact[13:].isdigit() and 97 - int(body) % 97 == int(compact[13:])


def _our_key(value: str) -> bool:
    kind = value[3:5]
    try:
        apikeys.parse(value, kind=kind)
    except Exception:  # noqa: BLE001 (any refusal: not one of ours)
        return False
    return True


def _jwt(value: str) -> bool:
    header = value.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except RecursionError:
        return True  # JSON nested past the parser's depth, in a JWT's shape: claimed anyway
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def _ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# Unicode letters count (addresses with internationalised local parts and domains exist):
# detection must cover the whole address, or a redaction would leak the part it missed.
_EMAIL = re.compile(
    r"(?<![\w.%+'-])[\w.%+-]{1,64}(?:'[\w.%+-]{1,63})?@[^\W_](?:[\w-]{0,61}[^\W_])?"
    r"(?:\.[^\W_](?:[\w-]{0,61}[^\W_])?){1,8}\b"
)
# Loose shapes: the detectors below look inside them for the longest valid value, so that an
# expiry date or a BIC after the number cannot hide it.
_CARD = re.compile(r"(?<!\d)\d(?:(?:[ .-]{1,2}|\n)?\d){11,24}(?!\d)")
_CARD_SEPARATOR = re.compile(r"(?:[ .-]{1,2}|\n)")
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,40}\b")
_IBAN_SEPARATOR = re.compile(r"[ -]")
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}(?!\d)")
# Nine digits without separators: an SSN only right after its name.
_SSN_BARE = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?)[\s:#.]{0,4}(?:is )?"
    r"((?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4})(?!\d)"
)
_OUR_KEY = re.compile(r"\btg_(?:sk|rt|ml)_[0-9A-Za-z]{38}\b")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,2048}\.[A-Za-z0-9_-]{4,8192}\.[A-Za-z0-9_-]{0,1024}")
# PEM (headers such as Proc-Type and DEK-Info included), PGP armour, and either one inside a
# JSON string, where line breaks are the two characters backslash and n.
PRIVATE_KEY_END = r"-----END (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
    r"[A-Za-z0-9+/=\s\\:,.-]{0,16384}?" + PRIVATE_KEY_END
)
_PROVIDER_KEY = re.compile(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,200}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}"
    r"|github_pat_[A-Za-z0-9_]{22,255}|xox[abposr]-[A-Za-z0-9-]{10,200})\b"
)
# A value after a secret's name, the name possibly prefixed or suffixed (DB_PASSWORD,
# client_secret, aws_secret_access_key) and quoted (JSON, YAML, shell).
_PASSWORD = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?:[A-Za-z0-9]{1,20}[_-]){0,3}"
    r"(?:password|passwd|pwd|passphrase|secret|api[_-]?key|token|access[_-]?key)"
    r"(?:[_-][A-Za-z0-9]{1,20}){0,3}[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
    r"([^\s\"',;]{1,256})"
)
# The password in a URL's userinfo: scheme://user:password@host.
_URL_PASSWORD = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,64}:([^\s/@]{1,256})@")
_UK_NINO = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
_FR_NIR = re.compile(
    r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}\b"
)
_DE_TAX_ID = re.compile(r"(?<!\d)[1-9]\d(?: ?\d){9}(?!\d)")
_PASSPORT = re.compile(
    r"\b(?:[A-Z]{0,2}\d{6,9}|[A-Z]\d{2}[A-Z0-9]{5,6}|\d{2}[A-Z]{2}\d{5})\b"  # US/UK, DE, FR
)
_DATE = re.compile(r"\b(?:\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d{2}|(?:19|20)\d{2}-\d{2}-\d{2})\b")
_MONTHS = (
    r"jan(?:uary|vier|uar|\.)?|feb(?:ruary|ruar|\.)?|f[ée]vrier|febbraio|febrero|mar(?:ch|s|\.)?"
    r"|m[äa]rz|marzo|maart|apr(?:il|\.)?|avril|aprile|abril|may|mai|mei|maggio|mayo"
    r"|june?|juin|juni|giugno|junio|july?|juillet|juli|luglio|julio|aug(?:ust|\.)?|ao[ûu]t"
    r"|agosto|augustus|sep(?:tember|tembre|\.)?|settembre|septiembre|oct(?:ober|obre|\.)?"
    r"|oktober|ottobre|octubre|nov(?:ember|embre|\.)?|novembre|noviembre|dec(?:ember|\.)?"
    r"|d[ée]cembre|dezember|dicembre|diciembre|januar|janvier|gennaio|enero|januari|februari"
)
_DATE_WORDS = re.compile(
    rf"(?i)\b(?:\d{{1,2}}(?:st|nd|rd|th|er)?\.? (?:de )?(?:{_MONTHS})(?: de)?,? (?:19|20)\d{{2}}"
    rf"|(?:{_MONTHS}) \d{{1,2}}(?:st|nd|rd|th)?,? (?:19|20)\d{{2}})\b"
)
# Health: ICD-10 codes (after a context word), and conditions and medications by name.
_ICD10 = re.compile(r"\b[A-TV-Z]\d[0-9AB](?:\.[0-9A-TV-Z]{1,4})?\b")
_HEALTH_TERMS = re.compile(
    r"(?i)\b(?:diabet(?:es|ic|e)|asthma|hiv|aids|"
    r"(?:(?:breast|lung|skin|prostate|colon|bowel|pancreatic|ovarian|cervical|bone|brain) )?"
    r"(?:cancer|tumou?r)|leuka?emia|lymphoma|melanoma|depression|bipolar(?: disorder)?|"
    r"schizophreni[ae]|epilep(?:sy|tic)|alzheimer'?s?(?: disease)?|parkinson'?s?(?: disease)?|"
    r"dementia|hepatitis(?: [a-e]\b)?|tuberculosis|pregnan(?:t|cy)|chemotherapy|dialysis|"
    r"autism|adhd|ptsd|crohn'?s(?: disease)?|multiple sclerosis|cystic fibrosis|hypertension|"
    r"(?:eating|anxiety|personality) disorders?|anorexia|bulimia|arthritis|lupus|"
    r"heart (?:disease|failure|attack)|"
    r"insulin|metformin|warfarin|sertraline|fluoxetine|lithium|methadone|prozac|"
    r"antiretroviral|antidepressants?|chimioth[ée]rapie|diab[èe]te|grossesse|"
    r"zuckerkrankheit|schwanger(?:schaft)?)\b"
)
_BIOMETRIC = re.compile(
    r"(?i)\b(?:fingerprints?|face ?prints?|facial (?:recognition|geometry|scan)|"
    r"iris (?:scan|pattern)s?|retina(?:l)? scans?|voice ?prints?|palm ?prints?|"
    r"biometric (?:data|template|sample)s?|empreintes? digitales?|fingerabdr[üu]cke?)\b"
)
# Minors: an age under 18, or a school grade, in a few languages.
_MINOR = re.compile(
    r"(?i)\b(?:(?:aged?|age of|age:|âge:|alter:|edad:|età:)\s{1,3}(?:[1-9]|1[0-7])\b|"
    r"(?:[1-9]|1[0-7])[- ]years?[- ]old\b|"
    r"(?:[1-9]|1[0-7]) (?:ans|años|anni|jaar)\b|(?:[1-9]|1[0-7]) jahre alt\b|"
    r"(?:[1-9]|1[0-2])(?:st|nd|rd|th) grade\b|"
    r"grade (?:[1-9]|1[0-2])\b|year (?:[1-9]|1[0-3]) (?:pupil|student)\b|"
    r"(?:kindergarten|primary school|elementary school|middle school|grundschule|"
    r"[ée]cole primaire|coll[èe]ge)\b)"
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")


_BIRTH_CONTEXT = ("born", "birth", "dob", "né le", "née le", "geboren", "nacimiento")


def default_detectors() -> list[Detector]:
    """The detectors shipped today, one class each (credentials has several patterns)."""
    # Imported here: those modules build on `Span` above.
    from tenantguard.pii.addresses import AddressDetector  # noqa: PLC0415
    from tenantguard.pii.names import NameDetector  # noqa: PLC0415

    return [
        NameDetector(),
        AddressDetector(),
        PatternDetector("email", _EMAIL, 0.9, context=("mail", "contact", "e-mail")),
        GroupedDetector(
            "payment_card", _CARD, _CARD_SEPARATOR, 0.9, payment_card, 12, 19, ("card", "visa")
        ),
        GroupedDetector(
            "iban", _IBAN, _IBAN_SEPARATOR, 0.85, iban, 15, 34, ("iban", "account", "bank")
        ),
        PatternDetector("us_ssn", _SSN, 0.6, context=("ssn", "social security"), context_boost=0.3),
        PatternDetector("us_ssn", _SSN_BARE, 0.85, group=1),
        PatternDetector("credential", _OUR_KEY, 1.0, _our_key),
        PatternDetector("credential", _JWT, 0.95, _jwt),
        PatternDetector("credential", _PRIVATE_KEY, 1.0),
        PatternDetector("credential", _PROVIDER_KEY, 0.9),
        PatternDetector("credential", _PASSWORD, 0.85, group=1),
        PatternDetector("credential", _URL_PASSWORD, 0.9, group=1),
        PatternDetector("uk_nino", _UK_NINO, 0.8, context=("national insurance", "nino", "ni ")),
        PatternDetector("fr_nir", _FR_NIR, 0.85, fr_nir, context=("sécurité sociale", "nir")),
        PatternDetector("de_tax_id", _DE_TAX_ID, 0.6, de_tax_id, context=("steuer", "tax", "idnr")),
        PatternDetector(
            "passport_number",
            _PASSPORT,
            0.6,
            context=("passport", "passeport", "reisepass", "pasaporte"),
            context_boost=0.25,
            require_context=True,
        ),
        PatternDetector(
            "date_of_birth",
            _DATE_WORDS,
            0.6,
            context=_BIRTH_CONTEXT,
            context_boost=0.3,
            require_context=True,
        ),
        PatternDetector(
            "date_of_birth",
            _DATE,
            0.6,
            context=_BIRTH_CONTEXT,
            context_boost=0.3,
            require_context=True,
        ),
        PhoneDetector(),
        PatternDetector(
            "health",
            _ICD10,
            0.6,
            context=("icd", "diagnos", "code", "cim-10"),
            context_boost=0.3,
            require_context=True,
        ),
        PatternDetector("health", _HEALTH_TERMS, 0.75),
        PatternDetector("biometric", _BIOMETRIC, 0.8),
        PatternDetector("minor", _MINOR, 0.75, context=("child", "kid", "student", "pupil")),
        PatternDetector("ip_address", _IPV4, 0.7, _ip, context=("ip", "address", "host")),
        PatternDetector("ip_address", _IPV6, 0.7, _ip, context=("ip", "address", "host")),
    ]


# Detectors whose every span comes from a match of their `pattern`: where it matches nowhere
# in a text, the detector is not run at all (most texts hold nothing: one search in C each,
# not a Python generator each).
_PATTERNED = (PatternDetector, GroupedDetector, PhoneDetector)


class DetectorRegistry:
    """The allow-listed detectors, by class."""

    def __init__(self, detectors: Sequence[Detector], *, prefilter: bool = True) -> None:
        """`prefilter`: skip a patterned detector whose pattern matches nowhere (the result
        is the same either way; a test compares both)."""
        if not detectors:
            raise ValueError("a registry of no detectors would find nothing: refuse it")
        self._by_class: dict[str, list[Detector]] = {}
        for detector in detectors:
            self._by_class.setdefault(detector.pii_class, []).append(detector)
        self._prefilter = prefilter

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(self._by_class)

    def check_classes(self, classes: Iterable[str]) -> frozenset[str]:
        chosen = frozenset(classes)
        if chosen - self.classes:
            raise UnknownPiiClass()
        return chosen

    def scan(self, text: str, classes: Iterable[str] | None = None) -> list[Span]:
        """Spans of the requested classes (all, by default) in `text`, which is first
        normalised (`normalise_for_scan`: look-alike spaces and full-width forms, zero-width
        characters, percent-encoding) so that formatting cannot hide a value; spans are in
        `text`'s offsets.

        Overlaps are resolved without losing coverage: credentials first (they are strict on
        every channel, so no other class may take their place), then the longer span (a
        validated IBAN beats the card-like digits inside it), then the higher score; a span
        that loses keeps the parts no winner covers, so the rest of a name next to a
        password is still redacted."""
        chosen = self.classes if classes is None else self.check_classes(classes)
        scanned, positions = normalise_for_scan(text)
        found = [
            s
            for c in sorted(chosen)
            for d in self._by_class[c]
            if not (
                self._prefilter and isinstance(d, _PATTERNED) and d.pattern.search(scanned) is None
            )
            for s in d.detect(scanned)
        ]
        found.sort(key=lambda s: (s.pii_class not in _FIRST, s.start - s.end, -s.score, s.start))
        starts: list[int] = []  # kept spans, disjoint, ordered by start
        kept: list[Span] = []
        for span in found:
            for piece in _uncovered(span, starts, kept, scanned):
                index = bisect.bisect_left(starts, piece.start)
                starts.insert(index, piece.start)
                kept.insert(index, piece)
        if positions is None:
            return kept
        starts, ends = positions
        return [Span(starts[s.start], ends[s.end - 1], s.pii_class, s.score) for s in kept]


_FIRST = frozenset({"credential"})


def _uncovered(span: Span, starts: list[int], kept: list[Span], text: str) -> Iterator[Span]:
    """The parts of `span` that no kept span covers; where a part was cut, it is trimmed of
    the spaces and punctuation at the cut."""
    index = bisect.bisect_right(starts, span.start) - 1
    position = span.start
    if index >= 0 and kept[index].end > position:
        position = kept[index].end
    index += 1
    while position < span.end:
        stop = starts[index] if index < len(starts) and starts[index] < span.end else span.end
        piece_start, piece_end = position, stop
        while (
            piece_start != span.start
            and piece_start < piece_end
            and not text[piece_start].isalnum()
        ):
            piece_start += 1
        while (
            piece_end != span.end and piece_end > piece_start and not text[piece_end - 1].isalnum()
        ):
            piece_end -= 1
        if piece_start < piece_end:
            yield Span(piece_start, piece_end, span.pii_class, span.score)
        if stop == span.end:
            return
        position = kept[index].end
        index += 1


# Spaces that look like a space, mapped to one; full-width ASCII forms to ASCII (one character
# each, so offsets hold); characters that render as nothing, removed (offsets mapped back).
_SPACES = "\u00a0\u1680\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
_ONE_FOR_ONE = {ord(c): " " for c in _SPACES} | {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff]")


_PERCENT = re.compile(r"%([2-7][0-9A-Fa-f])")  # printable ASCII, percent-encoded (URLs, logs)


def normalise_for_scan(text: str) -> tuple[str, tuple[list[int], list[int]] | None]:
    """`text` as the detectors see it and, when its length changed (characters removed,
    percent-encoding decoded), where each character came from in `text`: its start offset
    and its end offset (None: offsets are unchanged)."""
    mapped = text.translate(_ONE_FOR_ONE)
    if _INVISIBLE.search(mapped) is None and "%" not in mapped:
        return mapped, None
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    position = 0
    while position < len(mapped):
        char = mapped[position]
        if _INVISIBLE.match(char):
            position += 1
            continue
        encoded = _PERCENT.match(mapped, position) if char == "%" else None
        width = 3 if encoded else 1
        chars.append(chr(int(encoded.group(1), 16)) if encoded else char)
        starts.append(position)
        ends.append(position + width)
        position += width
    return "".join(chars), (starts, ends)
