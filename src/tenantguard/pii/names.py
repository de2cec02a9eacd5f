"""Person names, without a language model. Pure.

A name is a run of capitalised words that something marks as a name:

- an honorific or title just before it (`Mr`, `Dr`, `Mme`, `Herr`, `Sra.`, …): score 0.85;
- a phrase that introduces a person (`my name is`, `je m'appelle`, `Dear`, `patient:`, …): 0.8;
- a common given name (a hand-kept list of several locales, below) followed by at least one
  more capitalised word, the surname: 0.7.

Capitalised words alone are not names ("Paris", "Monday", "Acme Corp"), so a run with none of
these marks is not claimed. Surname particles (`van`, `de`, `von der`, `di`, …) are kept inside
the span. The span never includes the honorific or the introducing phrase: redaction keeps
"Dr [PERSON_…]", which tells the model a doctor is meant without telling it who.

The list of given names is ours (common names of English-, French-, German-, Spanish-,
Italian- and Dutch-speaking countries), deliberately not taken from the corpus generator's
data, so that the evaluation (`tenantguard pii eval`) measures recall honestly.

Threat stopped: a person's name reaching a model or a log against the tenant's policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tenantguard.pii.detectors import Span


def _letters(test: Callable[[str], bool]) -> str:
    """A character class body of the Latin, Greek and Cyrillic letters `test` accepts."""
    blocks = [(0x41, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x1E00, 0x1EFF)]
    chars = [chr(c) for a, b in blocks for c in range(a, b + 1) if test(chr(c))]
    ranges: list[str] = []
    first = previous = chars[0]
    for char in [*chars[1:], ""]:
        if char and ord(char) == ord(previous) + 1:
            previous = char
            continue
        ranges.append(first if first == previous else f"{first}-{previous}")
        first = previous = char
    return "".join(ranges)


UPPER = _letters(str.isupper)
LOWER = _letters(str.islower)
_UPPER, _LOWER = UPPER, LOWER
_APOSTROPHE = "'\u2019"
# A capitalised word: O'Neill, D'Angelo, McDonald, LeBlanc, Jean-Pierre, Popescu-Țurcanu.
_WORD = (
    rf"[{_UPPER}](?:[{_APOSTROPHE}][{_UPPER}])?[{_LOWER}]{{1,30}}(?:[{_UPPER}][{_LOWER}]{{1,30}})?"
    rf"(?:[-{_APOSTROPHE}][{_UPPER}]?[{_LOWER}]{{1,30}}){{0,2}}"
)
_CAPS = rf"[{_UPPER}]{{2,30}}"
_INITIAL = rf"[{_UPPER}]\."
_PARTICLE = (
    r"(?:van der |van den |von der |van |von |de la |de los |del |de |di |da |du |le |la |d'|O')"
)
_EDGE = rf"(?![\w{_APOSTROPHE}-])"
# Each word that may start a name; what follows it: up to four more words (or initials).
_CANDIDATE = re.compile(rf"(?<![\w{_APOSTROPHE}-])(?:{_WORD}|{_CAPS}){_EDGE}")
_TAIL = re.compile(rf"(?: {_PARTICLE}?(?:{_WORD}|{_INITIAL}){_EDGE}){{0,4}}")
_CAPS_TAIL = re.compile(rf"(?: {_CAPS}{_EDGE}){{0,4}}")

HONORIFICS = frozenset(
    {
        "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "lady", "lord", "madam",
        "m", "mme", "mlle", "me", "docteur", "herr", "frau", "sr", "sra", "srta", "don",
        "doña", "sig", "sig.ra", "signor", "signora", "dott", "dott.ssa", "dhr", "mevr",
        "mevrouw", "meneer",
    }
)  # fmt: skip
# Phrases after which a capitalised run is a person (lower case; matched just before the run).
INTRODUCERS = (
    "my name is", "name is", "name:", "named", "called", "i am", "i'm", "this is",
    "dear", "hi", "hello", "regards,", "regards", "sincerely,", "thanks,", "signed",
    "patient", "patient:", "customer", "customer:", "employee", "contact:", "contact person",
    "attn", "attn:", "from:", "to:", "cc:", "spoke to", "spoke with", "met with", "assigned to",
    "je m'appelle", "je suis", "nom :", "nom:", "madame", "monsieur", "bonjour", "cordialement,",
    "ich heiße", "ich heisse", "mein name ist", "name ist", "sehr geehrte", "sehr geehrter",
    "hallo", "mit freundlichen grüßen", "me llamo", "mi nombre es", "estimado", "estimada",
    "hola", "mi chiamo", "gentile", "caro", "cara", "ciao", "mijn naam is", "ik ben",
    "beste", "geachte", "au nom de", "a nombre de", "intestato a", "ten name van",
    "on behalf of", "in the name of", "im namen von", "contactez", "contact", "write to",
    "scrivere a", "escriba a", "mail",
)  # fmt: skip
_INTRODUCER = re.compile(
    r"(?i)(?:^|[^\w])(?:"
    + "|".join(re.escape(p) for p in sorted(INTRODUCERS, key=len, reverse=True))
    + r")[ \t]{1,3}$"
)
# Capitalised words that open a run and mark what follows as a name: titles and greetings.
_OPENERS = HONORIFICS | frozenset(
    {"dear", "hi", "hello", "bonjour", "hallo", "hola", "ciao", "beste", "geachte", "estimado",
     "estimada", "gentile", "caro", "cara", "madame", "monsieur", "patient", "customer",
     "dr.", "mr.", "mrs.", "ms."}
)  # fmt: skip
_HONORIFIC = re.compile(r"(?i)(?:^|[^\w.])([\w.]{1,9})\.?[ \t]{1,3}$")

_GIVEN_TEXT = """
    james john robert michael william david richard joseph thomas charles christopher daniel
    matthew anthony mark donald steven paul andrew joshua kenneth kevin brian george timothy
    ronald edward jason jeffrey ryan jacob gary nicholas eric jonathan stephen larry justin
    scott brandon benjamin samuel gregory alexander patrick frank raymond jack dennis jerry
    tyler aaron jose adam nathan henry zachary douglas peter kyle noah ethan jeremy walter
    christian keith roger terry austin sean gerald carl harold dylan arthur lawrence jordan
    jesse bryan billy bruce gabriel joe logan alan juan albert willie elijah wayne randy
    vincent mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy
    betty sandra margaret ashley kimberly emily donna michelle carol amanda melissa deborah
    stephanie dorothy rebecca sharon laura cynthia amy kathleen angela shirley brenda emma anna
    pamela nicole samantha katherine christine helen debra rachel carolyn janet maria catherine
    heather diane olivia julie joyce victoria ruth virginia lauren kelly christina joan evelyn
    judith andrea hannah megan cheryl jacqueline martha madison teresa gloria sara janice ann
    kathryn abigail sophia frances jean alice judy isabella julia grace amber denise danielle
    marilyn beverly charlotte natalie theresa diana brittany doris kayla alexis lori marie
    oliver harry jack charlie george oscar archie leo freddie alfie theo arthur isla ava mia
    amelia poppy ella lily evie sophie florence freya millie rosie daisy ada alan tom ben sam
    jean pierre michel andré philippe rené louis alain jacques bernard marcel daniel roger
    robert paul claude christian henri georges nicolas françois patrick gérard christophe
    joseph julien laurent frédéric éric stéphane david olivier pascal thierry sébastien jérôme
    mathieu guillaume antoine hugo lucas théo gabriel arthur raphaël léo maxime marie jeanne
    françoise monique catherine nathalie isabelle jacqueline sylvie anne martine madeleine
    nicole suzanne hélène christine marguerite denise louise christiane yvonne sophie valérie
    chantal céline sandrine camille léa manon chloé inès jade louise emma alice juliette zoé
    clémence mathilde élodie aurélie émilie julie pauline margaux peter michael thomas andreas
    wolfgang klaus jürgen günter stefan christian uwe werner horst frank dieter manfred gerhard
    hans bernd helmut matthias martin jörg markus sven sebastian tobias florian alexander
    maximilian lukas felix jonas leon finn paul luca niklas tim jan moritz philipp fabian
    dominik kai lars dirk heinz karl friedrich wilhelm ursula monika petra elisabeth sabine
    renate helga karin brigitte ingrid erika andrea gisela claudia susanne gabriele christa
    christine hannelore birgit heike martina stefanie julia katharina anna lena laura lea sarah
    hannah lisa johanna sophie leonie marie mia emilia lina klara greta frieda ida charlotte
    jana nina franziska anja silke antonio manuel josé francisco juan david javier daniel
    carlos jesús alejandro miguel rafael pedro ángel pablo sergio fernando jorge luis alberto
    álvaro adrián diego raúl enrique ramón vicente andrés joaquín santiago mateo hugo martín
    iker mario maría carmen ana isabel dolores pilar teresa rosa josefa cristina francisca
    laura antonia marta elena lucía mercedes concepción manuela sara paula raquel rocío beatriz
    alba silvia nuria irene patricia andrea julia noelia sofía valeria martina daniela giuseppe
    giovanni antonio mario luigi francesco angelo vincenzo pietro salvatore carlo franco
    domenico bruno paolo michele giorgio aldo sergio luciano alessandro andrea marco matteo
    lorenzo leonardo riccardo tommaso davide gabriele federico simone stefano enrico anna
    giuseppina rosa angela giovanna teresa lucia carmela caterina francesca antonietta carla
    elena concetta rita margherita franca paola chiara giulia sofia aurora alessia martina
    ginevra beatrice valentina federica silvia elisa roberta monica laura jan johannes cornelis
    hendrik willem pieter gerrit jacobus adrianus petrus dirk klaas daan sem lucas levi finn
    bram thijs ruben jesse lars stijn joris koen wouter bas maria johanna anna cornelia
    elisabeth wilhelmina hendrika geertruida emma julia tess sophie zoë fenna sanne lotte anouk
    femke lieke iris eva fleur noor saar
"""
GIVEN_NAMES = frozenset(_GIVEN_TEXT.split())


def _is_title(word: str) -> bool:
    """An honorific as written before a name: `Dr`, `Mme`, `M.`; not `DR` (a Dutch postcode's
    letters) nor `dr` in running text."""
    bare = word.rstrip(".")
    return (
        bool(bare)
        and bare[0].isupper()
        and (len(bare) == 1 or not bare.isupper())
        and (bare.lower() in HONORIFICS)
    )


@dataclass(frozen=True, slots=True)
class NameDetector:
    pii_class: str = "person_name"

    def detect(self, text: str) -> Iterable[Span]:
        """Each capitalised word is looked at on its own (what is before it, what follows),
        never as part of a run grouped from the left: a name after a long run of capitalised
        words is found, and so is it in any tail of the text (the stream rescans tails)."""
        covered = 0
        for word in _CANDIDATE.finditer(text):
            if word.start() < covered:
                continue
            value = word.group()
            lowered = value.lower()
            if lowered in _OPENERS:
                continue  # a title or greeting is never part of the name it introduces
            before = text[max(0, word.start() - 40) : word.start()]
            caps = value.isupper()
            if (m := _HONORIFIC.search(before)) and _is_title(m.group(1)):
                score = 0.85
            elif _INTRODUCER.search(before.lower()):
                score = 0.8
            elif not caps and lowered in GIVEN_NAMES:
                score = 0.7  # a given name, then a surname
            else:
                continue
            tail = (_CAPS_TAIL if caps else _TAIL).match(text, word.end())
            end = tail.end() if tail else word.end()
            if score == 0.7 and end == word.end():
                continue  # a given name alone ("Will", "May") is not claimed
            covered = end
            yield Span(word.start(), end, self.pii_class, score)
