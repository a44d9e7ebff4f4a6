"""A deterministic, offline summarizer that keeps the sentences carrying facts.

Each compaction hands it the previous summary and the newly summarized turns; it answers one
line per kept sentence (``User: ...``, ``Assistant: ...``), in conversation order.

What it keeps:

* Every line of the previous summary (a fact once kept stays), unless the line is filler.
* Every user sentence that is not filler: what the user says is where names, preferences,
  allergies and decisions come from.
* An assistant (or tool) sentence only when it adds a fact of its own that no user line
  already holds: a new number, or a new name in a statement ("Your table at Casa Nova is
  booked for 8 pm"). Echoes ("Got it, your number ends in 4471"), compliments and questions
  back ("What breed is she?") are left out.

Filler is a sentence with no number, no name and no cue word, and little left once greetings,
thanks, backchannels and function words are taken out ("Thanks, that's great.", "Hmm, let
me think.", "Is there anything else I can help you with?"). Leading interjections ("Um,",
"Oh, and") are cut from kept sentences.

Signals, language-agnostic first: digits (numbers, dates, times, codes), capitalized words
inside a sentence (names, places; a sentence's first word counts when the same word is
capitalized mid-sentence somewhere else), then English cue words as an addition (health and
allergies, things to remember, identity and family, preferences, decisions and plans, dates,
number words).

Size: at most ``max_chars`` characters (default `DEFAULT_MAX_CHARS`). When the kept lines
outgrow it, the least fact-bearing line goes first (its priority: the signals above plus a
bonus for the user's own words), the oldest first among equals: filler never enters, so a
fact only ever gives way to a weightier fact once the budget is full.

Cost: linear in the input (two regular-expression passes and a few set look-ups per
sentence); ``bench/summary_facts.py`` measures it on a large input and the event loop's lag
meanwhile. `ExtractiveSummarizer.summarize` runs it in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from realtime_voicebot.summarization.base import SummaryInput, format_turns, role_label

DEFAULT_MAX_CHARS = 1200
"""About 300 tokens (4 characters a token): room for some 25 one-sentence facts, a few
hundred tokens at most in the window (1.5 % of the default 20,000-token threshold), and
still a fraction of a threshold as low as 250 tokens."""

MAX_FACT_CHARS = 240
"""A single kept sentence is clipped to this many characters."""

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])|\n+")
_TOKEN = re.compile(r"\w+(?:['’:./,-]\w+)*")
_LABEL = re.compile(r"^(User|Assistant|System|Tool): ")
_QUESTION_MARKS = frozenset("?？¿")

_LEADING_FILLER = re.compile(
    r"^(?:(?:um+|uh+|uhm|erm|hmm+|mhm|oh|ah|hi|hello|hey|so|and|also|anyway)\b[,.!]?\s+"
    r"|(?:well|okay|ok|yeah|yes|right|alright|sure|great)\s*[,!]\s+)+",
    re.IGNORECASE,
)
"""Interjections and discourse markers in front of a sentence ("Oh, and ...", "Um, so ...")."""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FUNCTION_WORDS = _words(
    """a an the i i'm i've i'll i'd me my mine myself you you're you've you'll you'd your
    yours we we're we've we'll our ours us he he's him his she she's her hers it it's its
    they they're them their this that that's these those there there's here is am are was
    were be been being do does did doing done have has had having will would shall should
    can could may might to of in on at by for with from about as into over after before up
    down out off and or but if so than then too very just also not don't doesn't didn't
    isn't aren't wasn't can't won't what what's which who whom how when where why all any
    some more most much many such own same other again really quite let let's get got go
    goes make say said tell told one lot lots"""
)
"""English function words: no fact in themselves (used only to tell filler apart)."""

_FILLER_WORDS = _words(
    """hi hello hey bye goodbye thanks thank cheers please ok okay yes yeah yep yup no nope
    sure great cool nice good fine right alright perfect awesome wonderful lovely excellent
    amazing exactly absolutely indeed course welcome mhm hmm um uh oh ah wow huh sounds
    sound glad happy help anything else today care take time think see know mean guess
    well sorry excuse pardon now meet pleasure fun interesting true totally definitely
    maybe probably thing things stuff bit kind something"""
)
"""Greetings, thanks, backchannels and the assistant's chit-chat (English)."""

_NOT_NAMES = _FUNCTION_WORDS | _FILLER_WORDS


_ENDINGS = ("", "s", "es", "ed", "d", "ing", "y", "ies", "ic", "al", "er", "ers", "ist", "ists")
"""The English endings a cue stem may take ("allerg" finds "allergic", "allergy")."""


@dataclass(frozen=True, slots=True)
class _CueGroup:
    """Cue stems (``_`` joins the words of a phrase) and the points they are worth."""

    name: str
    points: int
    stems: str


_CUE_GROUPS: tuple[_CueGroup, ...] = (
    _CueGroup(
        "health",
        8,
        (
            """allerg anaphylaxis anaphylactic asthma diabet epilepsy epileptic pregnant
            pregnancy medic medicine medication pill insulin inhaler epipen prescription
            prescribed doctor dentist hospital clinic surgery blood vegetarian vegan gluten
            lactose coeliac celiac kosher halal intolerant intolerance pain injur disabled
            disability wheelchair deaf blind therap sick"""
        ),
    ),
    _CueGroup(
        "remember",
        3,
        (
            """remember remind forget forgot note important make_sure keep_in_mind deadline
            password pin_code"""
        ),
    ),
    _CueGroup(
        "identity",
        2,
        (
            """name called live living born birthday address street phone email work job
            profession married wife husband partner son daughter sister brother mother mom
            mum father dad parent kid child children baby family friend dog cat pet moved
            years_old"""
        ),
    ),
    _CueGroup(
        "preference",
        2,
        (
            """prefer preferred preference favourite favorite like love hate dislike enjoy
            rather can't_stand don't_eat don't_drink"""
        ),
    ),
    _CueGroup(
        "decision",
        2,
        (
            """decide decision agree choose chose chosen pick plan planned planning book
            reserve reservation order bought buy cancel cancelled canceled confirm schedule
            appointment meeting deliver go_with going_to promise sign pay paid budget price
            cost"""
        ),
    ),
    _CueGroup(
        "date",
        2,
        (
            """monday tuesday wednesday thursday friday saturday sunday january february march
            april june july august september october november december tomorrow tonight
            yesterday weekend noon midnight o'clock a.m p.m"""
        ),
    ),
    _CueGroup(
        "number",
        2,
        (
            """one two three four five six seven eight nine ten eleven twelve twenty thirty
            forty fifty hundred thousand million first second third fourth fifth sixth
            seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth fifteenth
            twentieth thirtieth half dozen twice"""
        ),
    ),
)
"""English cue words by what they signal, with the points a sentence earns (once a group).
Health and allergies outweigh a number with a decision or a date ("Order 1265 goes to room
25"): a summary that forgets an allergy is worse than none."""


def _cue_words() -> dict[str, tuple[int, str]]:
    words: dict[str, tuple[int, str]] = {}
    for index, group in enumerate(_CUE_GROUPS):
        for stem in group.stems.split():
            for ending in _ENDINGS:
                words.setdefault(stem.replace("_", " ") + ending, (index, stem))
    return words


_CUE_WORDS = _cue_words()
"""Every cue word (and phrase) with its ending -> (index of its group, its stem)."""
_CUE_SINGLE = frozenset(word for word in _CUE_WORDS if " " not in word)
_PHRASE_STARTS = frozenset(word.split()[0] for word in _CUE_WORDS if " " in word)
_DIGIT = re.compile(r"\d")

NUMBER_POINTS = 3
NAME_POINTS = 2
MAX_NAME_POINTS = 4
USER_BONUS = 2
"""The user's own words (and unlabelled summary lines) rank above an assistant's."""
ASSISTANT_KEEP = 3
"""Fact points (new ones only, a number or a name among them) an assistant or tool sentence
needs to be kept: cue words alone ("noted", "important") are what chit-chat is made of."""
FILLER_CONTENT_CHARS = 12
"""A sentence without signals is filler when its content words add up to fewer characters."""


def sentences(text: str) -> list[str]:
    """Sentences of a text, stripped, empty ones left out."""
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s and s.strip()]


def tidy(sentence: str) -> str:
    """``sentence`` without the interjections in front ("Um, so my ..." -> "My ...")."""
    rest = _LEADING_FILLER.sub("", sentence)
    if rest == sentence or len(_TOKEN.findall(rest)) < 2:
        return sentence
    return rest[:1].upper() + rest[1:]


@dataclass(slots=True)
class _Line:
    """A candidate line of the summary: a previous summary line or a new sentence."""

    label: str
    text: str
    role: str
    tokens: list[str]
    carried: bool
    numbers: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    cues: tuple[tuple[_CueGroup, frozenset[str]], ...] = ()
    filler: bool = False

    @property
    def rendered(self) -> str:
        return f"{self.label}: {self.text}" if self.label else self.text

    @property
    def users(self) -> bool:
        """Whether the line states the user's own words (or a summary's, unlabelled)."""
        return self.role in ("user", "")

    @property
    def question(self) -> bool:
        return any(ch in _QUESTION_MARKS for ch in self.text)

    def keys(self) -> set[str]:
        """What the line states, for telling whether another line adds anything."""
        found = {n.casefold() for n in self.numbers} | {n.casefold() for n in self.names}
        for _group, stems in self.cues:
            found |= stems
        return found

    def points(self, known: set[str]) -> int:
        """Fact points, counting only what is not in ``known`` (empty: count everything)."""
        total = 0
        if any(n.casefold() not in known for n in self.numbers):
            total += NUMBER_POINTS
        names = sum(1 for n in self.names if n.casefold() not in known)
        total += min(names * NAME_POINTS, MAX_NAME_POINTS)
        for group, stems in self.cues:
            if stems - known:
                total += group.points
        return total


def _analyse(lines: list[_Line]) -> None:
    """Fill in each line's signals; names seen mid-sentence anywhere count at the start too."""
    capitalized = [[t[0].isupper() and _is_capitalized(t) for t in line.tokens] for line in lines]
    seen_names = {
        t.casefold()
        for line, caps in zip(lines, capitalized, strict=True)
        for t, cap in zip(line.tokens[1:], caps[1:], strict=True)
        if cap
    }
    for line, caps in zip(lines, capitalized, strict=True):
        tokens = line.tokens
        if _DIGIT.search(line.text):
            line.numbers = frozenset(t for t in tokens if _DIGIT.search(t))
        line.names = frozenset(
            t
            for index, (t, cap) in enumerate(zip(tokens, caps, strict=True))
            if cap and (index > 0 or t.casefold() in seen_names)
        )
        folded = _fold("\0".join(tokens)).split("\0")
        line.cues = cues = _cues_of(folded)
        # A carried line keeps a name in front even when no other line still says it.
        named = line.names or (line.carried and caps and caps[0])
        if not line.numbers and not named and not cues:
            content = sum(len(t) for t in folded if t not in _NOT_NAMES)
            line.filler = content < FILLER_CONTENT_CHARS


def _cues_of(folded: list[str]) -> tuple[tuple[_CueGroup, frozenset[str]], ...]:
    """The cue groups that case-folded tokens hit, each with the stems that hit it."""
    words = set(_CUE_SINGLE.intersection(folded))
    if _PHRASE_STARTS.intersection(folded):
        padded = [*folded, "", ""]
        for index, first in enumerate(folded):
            if first in _PHRASE_STARTS:
                two = f"{first} {padded[index + 1]}"
                three = f"{two} {padded[index + 2]}"
                words.update(phrase for phrase in (two, three) if phrase in _CUE_WORDS)
    if not words:
        return ()
    found: dict[int, set[str]] = {}
    for word in words:
        index, stem = _CUE_WORDS[word]
        found.setdefault(index, set()).add(stem)
    return tuple((_CUE_GROUPS[i], frozenset(stems)) for i, stems in sorted(found.items()))


def _fold(text: str) -> str:
    """Case-folded, with typographic apostrophes made plain."""
    return text.casefold().replace("’", "'")


def _is_capitalized(token: str) -> bool:
    if len(token) < 2 or not token[0].isupper():
        return False
    if token[1] in "'’":  # I'm, I'll (L'Oréal too, sadly): a contraction, no name
        return False
    return _fold(token) not in _NOT_NAMES


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def _key(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".!?。！？…")


class ExtractiveSummarizer:
    """Never fails, never needs a network; output at most ``max_chars`` characters.

    Deterministic: the same previous summary and turns give the same summary.
    """

    def __init__(
        self, max_chars: int = DEFAULT_MAX_CHARS, max_fact_chars: int = MAX_FACT_CHARS
    ) -> None:
        if max_chars < 40:
            raise ValueError("max_chars must be at least 40")
        self.max_chars = max_chars
        self.max_fact_chars = min(max_fact_chars, max_chars)

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        """`summarize_now` in a worker thread, so that a large input never stalls the loop."""
        return await asyncio.to_thread(self.summarize_now, list(items), previous_summary)

    def summarize_now(self, items: Sequence[SummaryInput], previous_summary: str | None) -> str:
        """The synchronous core of `summarize` (the language is the conversation's anyway)."""
        previous = list(self._previous_lines(previous_summary or ""))
        new = list(self._new_lines(items))
        candidates = previous + new
        _analyse(candidates)
        user_keys: set[str] = set()
        for line in candidates:
            if line.users and not line.filler:
                user_keys |= line.keys()
        kept: list[_Line] = []
        seen: set[str] = set()
        for line in candidates:
            key = _key(line.rendered)
            if line.filler or key in seen or not self._worth_keeping(line, user_keys):
                continue
            seen.add(key)
            kept.append(line)
        if not kept:
            fallback = (previous_summary or "").strip() or format_turns(items)
            return _clip(fallback, self.max_chars)
        return _clip("\n".join(self._within_budget(kept, user_keys)), self.max_chars)

    # --- steps ---------------------------------------------------------------------------

    def _previous_lines(self, previous: str) -> Iterable[_Line]:
        for raw in previous.splitlines():
            raw = raw.strip()
            if not raw:
                continue
            parts = [raw] if len(raw) <= self.max_fact_chars else sentences(raw)
            for part in parts:
                part = _clip(part, self.max_fact_chars)
                match = _LABEL.match(part)
                label = match.group(1) if match else ""
                text = part[match.end() :] if match else part
                role = label.casefold()
                yield _Line(label, text, role, _TOKEN.findall(text), carried=True)

    def _new_lines(self, items: Sequence[SummaryInput]) -> Iterable[_Line]:
        for item in items:
            label = role_label(item.role)
            room = max(8, self.max_fact_chars - len(label) - 2)
            for sentence in sentences(item.text):
                text = _clip(tidy(sentence), room)
                yield _Line(label, text, item.role, _TOKEN.findall(text), carried=False)

    def _worth_keeping(self, line: _Line, user_keys: set[str]) -> bool:
        if line.carried or line.users:
            return True
        new_number = any(n.casefold() not in user_keys for n in line.numbers)
        new_name = any(n.casefold() not in user_keys for n in line.names)
        if not (new_number or (new_name and not line.question)):
            return False
        return line.points(user_keys) >= ASSISTANT_KEEP

    def _within_budget(self, kept: list[_Line], user_keys: set[str]) -> list[str]:
        """The kept lines in order, the least fact-bearing dropped first until they fit."""
        rendered = [line.rendered for line in kept]
        total = sum(len(r) for r in rendered) + len(rendered) - 1
        if total <= self.max_chars:
            return rendered
        priority = [self._priority(line, user_keys) for line in kept]
        dropped: set[int] = set()
        for index in sorted(range(len(kept)), key=lambda i: (priority[i], i)):
            if total <= self.max_chars or len(dropped) == len(kept) - 1:
                break
            dropped.add(index)
            total -= len(rendered[index]) + 1
        return [r for i, r in enumerate(rendered) if i not in dropped]

    @staticmethod
    def _priority(line: _Line, user_keys: set[str]) -> int:
        if line.users:
            return line.points(set()) + USER_BONUS + (1 if line.question else 0)
        return line.points(user_keys)
