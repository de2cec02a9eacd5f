"""Street addresses in the forms of several locales. Pure.

A street address is a house number and a street named with a street-type word, in the order
each locale writes them:

- English: `221B Baker Street`, `4 Privet Dr.`, `1600 Pennsylvania Avenue NW, Suite 2`
  (the street types are the USPS Publication 28 list and the usual British ones);
- French: `12 bis, rue de la Paix`, `5 avenue Victor Hugo`;
- German and Dutch: `Hauptstraße 5a`, `Am Markt 3`, `Keizersgracht 123`;
- Spanish and Italian: `Calle de Alcalá, 42`, `Via Roma 10`, `Piazza del Duomo, 1`.

A following postal code and town (`75002 Paris`, `SW1A 1AA London`, `10115 Berlin`) joins the
span, so a redaction removes the whole address, not only its first line. Every repetition is
bounded, so a scan stays linear in the text.

Threat stopped: a home or work address reaching a model or a log against the tenant's policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tenantguard.pii.detectors import Span
from tenantguard.pii.names import LOWER, UPPER

_U = UPPER
_L = LOWER
# Street and town names: Hauptstraße, O'Connell, Sulzbach-Rosenberg; towns also in capitals.
_NAME = rf"[{_U}](?:['\u2019][{_U}])?[{_L}'\u2019]{{0,30}}(?:-[{_U}]?[{_L}'\u2019]{{1,30}}){{0,3}}"
_TOWN = rf"(?:{_NAME}|[{_U}]{{2,30}})"
_ORDINAL = r"\d{1,3}(?:st|nd|rd|th)"  # 5th Avenue, 42nd Street
_NUMBER = r"\d{1,5}(?: ?[A-Za-z](?![\w]))?(?:[-/]\d{1,4})?"

# USPS Publication 28 street suffixes (full and common abbreviated forms) and British ones.
_EN_TYPES_TEXT = """
    alley allee aly annex anx arcade arc avenue ave av bayou beach bend bluff bluffs bottom
    boulevard blvd branch bridge brook brooks burg burgs bypass camp canyon cape causeway
    center centre ctr centers circle cir circles cliff cliffs close club common commons corner
    corners course court ct courts cove coves creek crescent cres crest crossing crossroad
    curve dale dam divide drive dr drives estate estates expressway expy extension ext falls
    ferry field fields flat flats ford fords forest forge forges fork forks fort freeway fwy
    garden gardens gdns gateway glen glens green greens grove grv groves harbor harbors haven
    heights hts highway hwy hill hills hollow inlet island islands isle junction junctions key
    keys knoll knolls lake lakes land landing lane ln light lights loaf lock locks lodge loop
    mall manor manors meadow meadows mews mill mills mission motorway mount mountain mountains
    neck orchard oval overpass park parks parkway pkwy parkways pass passage path pike pine
    pines place pl plain plains plaza plz point points port ports prairie radial ramp ranch
    rapid rapids rest ridge ridges river road rd roads route row rue run shoal shoals shore
    shores skyway spring springs spur spurs square sq squares station stravenue stream street
    st streets summit terrace ter throughway trace track trafficway trail trl trailer tunnel
    turnpike underpass union unions valley valleys via viaduct view views village villages
    ville vista walk walks wall way ways well wells wharf wynd
"""
_EN_TYPES = _EN_TYPES_TEXT.split()
_EN_TYPE = "|".join(sorted({t.capitalize() for t in _EN_TYPES}, key=len, reverse=True))
_EN_UNIT = (
    r"(?:,? (?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Rm\.?|#) ?[\w-]{1,6})"
)
_EN_PREMISE = r"(?:(?:Flat|Studio|Apartment|Apt\.?|Unit|Suite) [\w-]{1,5},? )"
_EN = (
    rf"(?<![\w-])(?:{_EN_PREMISE}(?:{_NUMBER},? )?|{_NUMBER},? )"
    rf"(?:(?:{_NAME}|{_ORDINAL}) ){{1,4}}(?:{_EN_TYPE})\.?"
    rf"(?: (?:N|S|E|W|NE|NW|SE|SW)\b\.?)?{_EN_UNIT}?"
)

_FR_TYPE = (
    r"rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|route|cours|square|passage"
    r"|voie|faubourg|rond-point|esplanade|promenade|sentier|villa|cité|résidence|hameau"
)
_FR_LINK = r"(?:de la |de l'|de l\u2019|du |des |de |d'|d\u2019|la |le |les )"
_FR = (
    rf"(?<![\w-])\d{{1,4}}(?: ?(?:bis|ter|quater|[A-D])(?![\w]))?,? (?i:{_FR_TYPE}) "
    rf"{_FR_LINK}?{_NAME}(?: (?:{_FR_LINK}|et )?{_NAME}){{0,3}}"
)

_DE_SUFFIX = (
    r"straße|strasse|str\.|weg|gasse|allee|platz|ring|damm|ufer|chaussee|steig|pfad|markt"
    r"|straat|laan|gracht|kade|singel|dijk|plein|steeg|dreef|hof|pad|wal|baan|boulevard"
    r"|straatweg|kanaal|park|plantsoen|erf"
)
_DE_WORD = (
    r"Straße|Strasse|Weg|Gasse|Allee|Platz|Ring|Damm|Ufer|Chaussee|Steig|Pfad|Markt|Hof"
    r"|Straat|Laan|Gracht|Kade|Singel|Dijk|Plein"
)
_DE = (
    rf"(?<![\w-])(?:[{_U}][{_L}]{{1,30}}(?:-[{_U}][{_L}]{{1,30}}){{0,3}}(?:{_DE_SUFFIX})"
    rf"|[{_U}][{_L}]{{1,30}}(?:-[{_U}][{_L}]{{1,30}}){{0,3}}-(?:{_DE_WORD})"
    rf"|(?:{_NAME} ){{1,3}}(?:{_DE_WORD})|(?:Am|An der|Auf der|Im|In der|Zum|Zur|Op de|Aan de"
    rf"|In de) {_NAME}) {_NUMBER}(?![\w])"
)

_ES_IT_TYPE = (
    r"Calle|C/|Avenida|Avda\.?|Paseo|Plaza|Pza\.?|Camino|Ronda|Travesía|Carretera|Callejón"
    r"|Glorieta|Pasaje|Rambla|Alameda|Cuesta|Urbanización|Via|Viale|Piazza|Piazzale|Corso"
    r"|Largo|Vicolo|Strada|Contrada|Borgo|Lungomare|Vico|Rua|Travessa|Praça|Avinguda|Carrer"
    r"|Vial|Pasadizo|Cañada|Incrocio|Stretto|Canale|Rotonda|Viottolo|Sentiero|Quartiere"
)
_ES_IT_LINK = (
    r"(?:de la |de los |de las |del |de |dei |degli |delle |della |dello |di |da |do |dos "
    r"|das |d'|d\u2019|de l'|del la |la |el |los |las )"
)
_ES_IT = (
    rf"(?<![\w-])(?:{_ES_IT_TYPE}) {_ES_IT_LINK}?{_NAME}(?: {_ES_IT_LINK}?{_NAME}){{0,4}}"
    rf",? (?:n(?:º|°|o\.|úm\.) ?)?{_NUMBER}(?![\w])"
    r"(?:,? (?:(?:Piso|Puerta|Esc\.?|Interno|Int\.|Scala|Apt\.?|Piano|Appartamento) ?[\w-]{1,4}"
    r"|\d{1,2}º ?[A-Z]?))?"
)

# A postal code and a town after the street, on the same or the next line.
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}"
_POSTAL = (
    rf"(?:,? ?\n? ?(?:\d{{5}}(?:-\d{{4}})?|\d{{4}} ?[A-Z]{{2}}|\d{{4}}|{_UK_POSTCODE})"
    rf"(?: {_TOWN}){{1,3}}(?![\w])"
    rf"|,? ?\n? ?(?:{_TOWN} ){{0,2}}{_TOWN},? (?:[A-Z]{{2}} )?\d{{5}}(?:-\d{{4}})?"
    rf"|,? ?\n? ?(?:{_TOWN} ){{0,2}}{_TOWN},? {_UK_POSTCODE})"
)

_ADDRESS = re.compile(rf"(?:{_EN}|{_FR}|{_DE}|{_ES_IT})(?:{_POSTAL})?")


@dataclass(frozen=True, slots=True)
class AddressDetector:
    pii_class: str = "street_address"
    score: float = 0.85  # a number and a street-type word: stronger than a capitalised run

    def detect(self, text: str) -> Iterable[Span]:
        for match in _ADDRESS.finditer(text):
            yield Span(match.start(), match.end(), self.pii_class, self.score)
