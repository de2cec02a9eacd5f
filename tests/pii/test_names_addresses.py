"""Person names and street addresses: found whole in several locales, with their cues; runs
of capitalised words without a cue (towns, companies, weekdays) are not names."""

from __future__ import annotations

import pytest

from tenantguard.pii.addresses import AddressDetector
from tenantguard.pii.names import NameDetector
from tenantguard.pii.policy import DEFAULT_MIN_CONFIDENCE


def names(text: str) -> list[str]:
    return [text[s.start : s.end] for s in NameDetector().detect(text)]


def addresses(text: str) -> list[str]:
    return [text[s.start : s.end] for s in AddressDetector().detect(text)]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Dear John Smith, thanks for writing.", "John Smith"),
        ("Mr. Smith called twice.", "Smith"),
        ("Dr Ada Lovelace will see you.", "Ada Lovelace"),
        ("Dear Dr. Melinda Ross,", "Melinda Ross"),
        ("my name is Jean-Pierre Dubois", "Jean-Pierre Dubois"),
        ("Meet Olivia Ruiz de la Vega today", "Olivia Ruiz de la Vega"),
        ("Sehr geehrte Frau Müller,", "Müller"),
        ("Mme Camille Leroy est arrivée", "Camille Leroy"),
        ("Bonjour, je m'appelle Roland Salmon et j'habite ici", "Roland Salmon"),
        ("Hola, me llamo Lucía Gómez", "Lucía Gómez"),
        ("Ciao, mi chiamo Giulia Bianchi", "Giulia Bianchi"),
        ("Hallo, mijn naam is Daan van der Berg", "Daan van der Berg"),
        ("the form from Thomas O'Neill arrived", "Thomas O'Neill"),
    ],
)
def test_names_are_found_without_their_title_or_greeting(text: str, name: str) -> None:
    assert names(text) == [name]


@pytest.mark.parametrize(
    "text",
    [
        "Paris is lovely in May.",
        "Acme Corp Ltd filed the report.",
        "The Monday Meeting moved to Room Four.",
        "See the New York Times.",
        "Postcode 6859 DR Wezep.",  # DR: a Dutch postcode's letters, not a doctor
        "Dear Sir,",  # a greeting and nothing after it
    ],
)
def test_capitalised_words_without_a_cue_are_not_names(text: str) -> None:
    assert names(text) == []


def test_name_scores_follow_the_strength_of_the_cue() -> None:
    titled = next(iter(NameDetector().detect("Dr Ada Lovelace")))
    introduced = next(iter(NameDetector().detect("my name is Ada Lovelace")))
    listed = next(iter(NameDetector().detect("Ada Lovelace")))
    assert titled.score > introduced.score > listed.score >= DEFAULT_MIN_CONFIDENCE


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("I live at 221B Baker Street, London.", "221B Baker Street"),
        ("Send it to 4 Privet Dr., Little Whinging", "4 Privet Dr."),
        (
            "1600 Pennsylvania Avenue NW, Suite 2, Washington, DC 20500",
            "1600 Pennsylvania Avenue NW, Suite 2, Washington, DC 20500",
        ),
        ("Studio 7, Pearson Court, BB66 7LJ West Roberttown.", None),
        ("12 bis, rue de la Paix, 75002 Paris", "12 bis, rue de la Paix, 75002 Paris"),
        ("5 avenue Victor Hugo", "5 avenue Victor Hugo"),
        ("Hauptstraße 5a, 10115 Berlin", "Hauptstraße 5a, 10115 Berlin"),
        ("Sabina-Franke-Gasse 77/93", "Sabina-Franke-Gasse 77/93"),
        ("Berliner Straße 12", "Berliner Straße 12"),
        ("Am Markt 3", "Am Markt 3"),
        ("Keizersgracht 123, 1015 CJ Amsterdam", "Keizersgracht 123, 1015 CJ Amsterdam"),
        ("Calle de Alcalá, 42", "Calle de Alcalá, 42"),
        ("Via Roma 10", "Via Roma 10"),
        ("Piazza del Duomo, 1", "Piazza del Duomo, 1"),
    ],
)
def test_addresses_are_found_whole_with_postcode_and_town(text: str, address: str | None) -> None:
    expected = text.rstrip(".") if address is None else address
    assert addresses(text) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "We met on 5 May at the Hilton.",
        "It costs 5 Euro.",
        "Version 3 Release Notes",
        "Chapter 12 of the book",
    ],
)
def test_numbers_before_words_are_not_addresses(text: str) -> None:
    assert addresses(text) == []
