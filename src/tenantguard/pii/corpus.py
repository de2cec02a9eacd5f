"""A synthetic, labelled, multi-locale corpus for measuring the PII detectors.

Texts are made from templates in six languages whose slots are filled by Faker (the values of
seven locales: names, addresses, phone numbers, IBANs, cards, national numbers) and by a few
generators of ours where Faker has no valid form (UK NINO, German tax ids, credentials).
Each slot's span is recorded as it is written, so the labels are exact. Templates also carry
distractors that must not be claimed: order numbers, amounts, meeting dates, versions, company
and town names.

The same seed gives the same corpus, byte for byte. Faker is an optional dependency (the
`eval` extra): the detectors never use it, and the name and address detectors were written
without its data, so recall is measured, not learned.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from tenantguard.errors import ConfigurationError
from tenantguard.identity import apikeys

LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "nl_NL")


@dataclass(frozen=True, slots=True)
class Label:
    start: int
    end: int
    pii_class: str


@dataclass(frozen=True, slots=True)
class Sample:
    locale: str
    text: str
    labels: tuple[Label, ...]


# Slot name -> the PII class it carries (None: a distractor, which must not be claimed).
SLOTS: dict[str, str | None] = {
    "name": "person_name",
    "email": "email",
    "phone": "phone_number",
    "address": "street_address",
    "card": "payment_card",
    "iban": "iban",
    "ssn": "us_ssn",
    "nino": "uk_nino",
    "nir": "fr_nir",
    "steuer_id": "de_tax_id",
    "passport": "passport_number",
    "dob": "date_of_birth",
    "ip": "ip_address",
    "credential": "credential",
    "condition": "health",
    "age": "minor",
    "biometric": "biometric",
    "order": None,
    "amount": None,
    "meeting": None,
    "version": None,
    "company": None,
    "city": None,
    "ticket": None,
    "title": None,
}

_COMMON = [
    "Ticket {ticket}: customer {name} ({email}) reports login failures since version {version}.",
    '{{"customer": "{name}", "email": "{email}", "phone": "{phone}"}}',
    "name={name}; iban={iban}; amount={amount}",
    "card on file: {card} (order {order}, {amount})",
    "client {ip} fetched /api/runs at {meeting}; user agent curl/{version}",
    "deploy failed: {credential} was pasted into the prompt by {company}",
    "From: {name} <{email}>\nTo: {email}\nSubject: order {order}",
]
TEMPLATES: dict[str, list[str]] = {
    "en": [
        "Hi, my name is {name} and I live at {address}. You can reach me on {phone}.",
        "Please update the billing contact to {name}, {email}, IBAN {iban}.",
        "Patient {name}, date of birth {dob}, was diagnosed with {condition}.",
        "My SSN is {ssn} and my passport number is {passport}.",
        "Her national insurance number is {nino}; she moved to {address} in {city}.",
        "Dear {title} {name}, our son is {age} and needs the form signed; his school is near"
        " {address}.",
        "The meeting with {company} is on {meeting} in {city}; budget {amount}.",
        "Dear {name}, your order {order} of {amount} has shipped to {address}.",
        "The app stores {biometric} for login; contact {email} for deletion.",
        "Call {phone} or write to {name} at {email} about invoice {order}.",
    ],
    "fr": [
        "Bonjour, je m'appelle {name} et j'habite au {address}. Mon numéro : {phone}.",
        "Numéro de sécurité sociale : {nir}, né le {dob}, suivi pour {condition}.",
        "Bonjour {title} {name}, merci de virer {amount} sur l'IBAN {iban} au nom de {name}.",
        "Réunion avec {company} le {meeting} à {city} (commande {order}).",
        "Ma fille a {age} et son école est au {address}.",
        "Contactez {name} par courriel : {email}, ou au {phone}.",
    ],
    "de": [
        "Hallo, ich heiße {name} und wohne in der {address}. Telefon: {phone}.",
        "Steuer-ID {steuer_id}, geboren am {dob}; Diagnose: {condition}.",
        "Guten Tag {title} {name}, bitte überweisen Sie {amount} an {name}, IBAN {iban}.",
        "Termin mit {company} am {meeting} in {city}, Bestellung {order}.",
        "Unser Kind ist {age} und geht zur Schule in der {address}.",
        "Sehr geehrte Frau {name}, Ihre E-Mail {email} wurde bestätigt.",
    ],
    "es": [
        "Hola, me llamo {name} y vivo en {address}. Mi teléfono es {phone}.",
        "Por favor, transfiera {amount} a la cuenta {iban} de {name}.",
        "Reunión con {company} el {meeting} en {city}, pedido {order}.",
        "Mi hijo tiene {age} y su colegio está en {address}.",
        "Escriba a {name} a {email} sobre la factura {order}.",
    ],
    "it": [
        "Ciao, mi chiamo {name} e abito in {address}. Telefono: {phone}.",
        "Si prega di versare {amount} sul conto {iban} intestato a {name}.",
        "Riunione con {company} il {meeting} a {city}, ordine {order}.",
        "Mia figlia ha {age} e la scuola è in {address}.",
        "Scrivere a {name} all'indirizzo {email} per l'ordine {order}.",
    ],
    "nl": [
        "Hallo, mijn naam is {name} en ik woon op {address}. Telefoon: {phone}.",
        "Maak {amount} over naar {iban} ten name van {name}.",
        "Afspraak met {company} op {meeting} in {city}, bestelling {order}.",
        "Ons kind is {age} en zit op school aan de {address}.",
        "Mail {name} op {email} over factuur {order}.",
    ],
}
_AGE = {
    "en": ["{n} years old", "{n}-year-old", "aged {n}", "in {g}th grade"],
    "fr": ["{n} ans"],
    "de": ["{n} Jahre alt"],
    "es": ["{n} años"],
    "it": ["{n} anni"],
    "nl": ["{n} jaar"],
}
_CONDITIONS = [
    "diabetes", "asthma", "HIV", "breast cancer", "depression", "epilepsy", "hepatitis C",
    "Crohn's disease", "multiple sclerosis", "schizophrenia", "hypertension", "ICD-10 E11.9",
    "leukaemia", "eating disorder", "bipolar disorder", "Parkinson's", "tuberculosis",
]  # fmt: skip
_BIOMETRIC = [
    "fingerprints", "face prints", "facial geometry", "iris scans", "voice prints",
    "palm prints", "retina scans", "biometric templates",
]  # fmt: skip


def _nino(rng: random.Random) -> str:
    first = rng.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    while first + second in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}:
        second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    digits = "".join(rng.choice(string.digits) for _ in range(6))
    spaced = rng.random() < 0.5
    body = f"{digits[:2]} {digits[2:4]} {digits[4:]}" if spaced else digits
    return f"{first}{second}{' ' if spaced else ''}{body}{' ' if spaced else ''}" + rng.choice(
        "ABCD"
    )


def _steuer_id(rng: random.Random) -> str:
    while True:
        digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(9)]
        if len(set(digits)) > 8:  # the real rule: one digit repeats; close enough for a corpus
            continue
        product = 10
        for d in digits:
            total = (d + product) % 10 or 10
            product = (total * 2) % 11
        return "".join(map(str, digits)) + str((11 - product) % 10)


def _credential(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits
    return rng.choice(
        [
            apikeys.assemble("sk", "".join(rng.choice(alphabet) for _ in range(32))),
            "sk-proj-" + "".join(rng.choice(alphabet) for _ in range(40)),
            "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
            "ghp_" + "".join(rng.choice(alphabet) for _ in range(36)),
        ]
    )


def _password(rng: random.Random) -> tuple[str, str]:
    """`password=…`: the label is the value, not the key."""
    alphabet = string.ascii_letters + string.digits
    return "password=", "".join(rng.choice(alphabet) for _ in range(14))


def _condition(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.1:
        return "ICD-10 ", rng.choice(["E11.9", "F32.1", "J45.909", "C50.9", "G40.909"])
    return "", rng.choice(_CONDITIONS)


def _group(value: str, rng: random.Random) -> str:
    return (
        " ".join(value[i : i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.5 else value
    )


def _faker(locale: str) -> Any:  # Faker's proxy is untyped
    try:
        from faker import Faker  # noqa: PLC0415 (optional: only the evaluation needs it)
    except ImportError as exc:
        raise ConfigurationError(
            "The PII evaluation needs Faker: install tenantguard with the 'eval' extra."
        ) from exc
    return Faker(locale)


Fill = Callable[[], "str | tuple[str, str]"]  # a value, or (an unlabelled prefix, the value)


def _fillers(locale: str, fakers: dict[str, Any], rng: random.Random) -> dict[str, Fill]:
    lang = locale[:2]
    fake = fakers[locale]

    def dob() -> str:
        born: date = fake.date_of_birth(minimum_age=18, maximum_age=90)
        if locale == "en_US":
            return rng.choice([born.strftime("%m/%d/%Y"), born.isoformat()])
        return rng.choice([born.strftime("%d/%m/%Y"), born.strftime("%d.%m.%Y"), born.isoformat()])

    def age() -> str:
        form = rng.choice(_AGE[lang])
        return form.format(n=rng.randint(2, 17), g=rng.randint(4, 9))

    def address() -> str:
        street = re.sub(r"\s*\n\s*", ", ", fake.street_address().strip())
        return street if rng.random() < 0.5 else f"{street}, {fake.postcode()} {fake.city()}"

    def meeting() -> str:
        day = date(2026, rng.randint(1, 12), rng.randint(1, 28))
        return rng.choice([day.strftime("%d/%m/%Y"), day.isoformat(), day.strftime("%d.%m.%Y")])

    return {
        "name": lambda: f"{fake.first_name()} {fake.last_name()}",
        "title": fake.prefix,
        "email": fake.email,
        "phone": fake.phone_number,
        "address": address,
        "card": lambda: _group(fake.credit_card_number(), rng),
        "iban": lambda: _group(fake.iban(), rng),
        "ssn": lambda: str(fakers["en_US"].ssn()),
        "nino": lambda: _nino(rng),
        "nir": lambda: str(fakers["fr_FR"].ssn()),
        "steuer_id": lambda: _steuer_id(rng),
        "passport": lambda: str(fakers["en_US"].passport_number()),
        "dob": dob,
        "ip": lambda: str(fake.ipv4() if rng.random() < 0.7 else fake.ipv6()),
        "credential": lambda: _password(rng) if rng.random() < 0.2 else _credential(rng),
        "condition": lambda: _condition(rng),
        "age": age,
        "biometric": lambda: rng.choice(_BIOMETRIC),
        "order": lambda: f"#{rng.randint(10**5, 10**9)}",
        "amount": lambda: f"{rng.randint(5, 9999)}.{rng.randint(0, 99):02d} EUR",
        "meeting": meeting,
        "version": lambda: f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
        "company": fake.company,
        "city": fake.city,
        "ticket": lambda: f"TCK-{rng.randint(1000, 99999)}",
    }


_SLOT = re.compile(r"\{([a-z_]+)\}|\{\{|\}\}")


def _render(template: str, fill: dict[str, Fill]) -> tuple[str, list[Label]]:
    parts: list[str] = []
    labels: list[Label] = []
    position = 0
    length = 0
    for match in _SLOT.finditer(template):
        literal = template[position : match.start()]
        parts.append(literal)
        length += len(literal)
        if match.group(1) is None:
            parts.append(match.group()[0])
            length += 1
        else:
            filled = fill[match.group(1)]()
            prefix, value = ("", filled) if isinstance(filled, str) else filled
            parts.append(prefix)
            length += len(prefix)
            pii_class = SLOTS.get(match.group(1))
            if pii_class is not None:
                labels.append(Label(length, length + len(value), pii_class))
            parts.append(value)
            length += len(value)
        position = match.end()
    parts.append(template[position:])
    return "".join(parts), labels


def generate(size: int, *, seed: int = 0, locales: tuple[str, ...] = LOCALES) -> Iterator[Sample]:
    """`size` samples, round-robin over `locales`, the same for the same seed."""
    unknown = set(locales) - set(LOCALES)
    if unknown or not locales or size < 0:
        raise ConfigurationError(f"Unknown locale(s) for the corpus: {sorted(unknown)}.")
    fakers = {}
    for locale in {*locales, "en_US", "fr_FR"}:  # national numbers come from these two
        fake = _faker(locale)
        fake.seed_instance(seed)
        fakers[locale] = fake
    rng = random.Random(seed)  # noqa: S311 (a reproducible corpus, not a secret)
    fillers = {locale: _fillers(locale, fakers, rng) for locale in locales}
    for index in range(size):
        locale = locales[index % len(locales)]
        templates = TEMPLATES[locale[:2]] + _COMMON
        text, labels = _render(rng.choice(templates), fillers[locale])
        yield Sample(locale, text, tuple(labels))
