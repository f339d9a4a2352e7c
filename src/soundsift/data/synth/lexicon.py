"""The words of the synthetic captions: phrasings per class, attribute, position, connector and frame.

Every entry is a pair ``(train, held_out)``: development and validation captions use only the first list;
evaluation captions also draw from the second, so the test split asks for phrasings never seen in
training (each held-out phrasing contains a word that no training phrasing uses; see eval_only_words).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Clause: (subject, verb in agreement with the subject, -ing form, plural subject).
Clause = tuple[str, str, str, bool]
# Nominal: (determiner or "", head noun phrase that adjectives precede, plural).
Nominal = tuple[str, str, bool]
Pair = tuple[list, list]

CLAUSES: dict[str, Pair] = {
    "dog_bark": (
        [("a dog", "barks", "barking", False), ("a canine", "barks", "barking", False),
         ("a dog", "woofs", "woofing", False)],
        [("a hound", "bays", "baying", False)],
    ),
    "bird_chirp": (
        [("a bird", "chirps", "chirping", False), ("a bird", "tweets", "tweeting", False),
         ("birds", "chirp", "chirping", True)],
        [("a songbird", "warbles", "warbling", False)],
    ),
    "siren": (
        [("a siren", "wails", "wailing", False), ("a siren", "sounds", "sounding", False),
         ("an emergency siren", "blares", "blaring", False)],
        [("a police car", "sounds its siren", "sounding its siren", False)],
    ),
    "bell": (
        [("a bell", "rings", "ringing", False), ("a bell", "chimes", "chiming", False),
         ("a church bell", "rings", "ringing", False)],
        [("a bell", "tolls", "tolling", False)],
    ),
    "engine_hum": (
        [("an engine", "hums", "humming", False), ("a motor", "runs", "running", False),
         ("an engine", "idles", "idling", False), ("a machine", "rumbles", "rumbling", False)],
        [("a generator", "drones", "droning", False)],
    ),
    "rain": (
        [("rain", "falls", "falling", False), ("rain", "patters", "pattering", False),
         ("the rain", "pours down", "pouring down", False)],
        [("a rain shower", "splashes down", "splashing down", False)],
    ),
    "knocking": (
        [("someone", "knocks", "knocking", False), ("someone", "knocks on a door", "knocking on a door", False),
         ("a person", "knocks on wood", "knocking on wood", False)],
        [("a visitor", "raps on the door", "rapping on the door", False)],
    ),
    "whistle": (
        [("someone", "whistles", "whistling", False), ("a person", "whistles a tune", "whistling a tune", False),
         ("a man", "whistles", "whistling", False)],
        [("a boy", "whistles a melody", "whistling a melody", False)],
    ),
    "clapping": (
        [("someone", "claps", "clapping", False), ("a person", "claps their hands", "clapping their hands", False),
         ("people", "clap", "clapping", True)],
        [("an audience", "applauds", "applauding", False)],
    ),
    "drum": (
        [("a drum", "beats", "beating", False), ("someone", "plays a drum", "playing a drum", False),
         ("a drummer", "hits a drum", "hitting a drum", False)],
        [("a percussionist", "pounds a tom", "pounding a tom", False)],
    ),
    "beep": (
        [("an alarm", "beeps", "beeping", False), ("a device", "beeps", "beeping", False),
         ("a machine", "emits beeps", "emitting beeps", False)],
        [("a timer", "bleeps", "bleeping", False)],
    ),
    "water_drip": (
        [("water", "drips", "dripping", False), ("a tap", "drips", "dripping", False),
         ("droplets", "fall into water", "falling into water", True)],
        [("a faucet", "leaks", "leaking", False)],
    ),
    "footsteps": (
        [("someone", "walks", "walking", False), ("a person", "walks", "walking", False),
         ("a person", "takes steps", "taking steps", False)],
        [("a pedestrian", "strides along", "striding along", False)],
    ),
    "telephone_ring": (
        [("a phone", "rings", "ringing", False), ("a telephone", "rings", "ringing", False),
         ("an old phone", "rings", "ringing", False)],
        [("a landline", "trills", "trilling", False)],
    ),
    "wind": (
        [("the wind", "blows", "blowing", False), ("wind", "gusts", "gusting", False),
         ("the wind", "howls", "howling", False)],
        [("a breeze", "sweeps past", "sweeping past", False)],
    ),
}

NOMINALS: dict[str, Pair] = {
    "dog_bark": ([("the", "barking of a dog", False), ("", "dog barks", True), ("", "barking", False)],
                 [("", "hound barks", True)]),
    "bird_chirp": ([("the", "chirping of a bird", False), ("", "bird chirps", True), ("", "birdsong", False)],
                   [("the", "twittering of a sparrow", False)]),
    "siren": ([("a", "siren", False), ("the", "wail of a siren", False), ("an", "emergency siren", False)],
              [("the", "scream of an ambulance siren", False)]),
    "bell": ([("the", "ringing of a bell", False), ("", "bell chimes", True), ("a", "bell", False)],
             [("the", "peal of a bell", False)]),
    "engine_hum": ([("the", "hum of an engine", False), ("", "engine noise", False),
                    ("the", "rumble of a motor", False)],
                   [("the", "drone of a generator", False)]),
    "rain": ([("", "rain", False), ("the", "sound of rain", False), ("", "rainfall", False)],
             [("a", "rain shower", False)]),
    "knocking": ([("", "knocking", False), ("", "knocks on a door", True), ("", "door knocks", True)],
                 [("", "rapping on wood", False)]),
    "whistle": ([("", "whistling", False), ("a", "whistled tune", False), ("the", "whistling of a person", False)],
                [("a", "whistled melody", False)]),
    "clapping": ([("", "clapping", False), ("", "hand claps", True), ("the", "clapping of hands", False)],
                 [("", "applause", False)]),
    "drum": ([("", "drum beats", True), ("the", "beating of a drum", False), ("", "drumming", False)],
             [("", "percussion hits", True)]),
    "beep": ([("", "beeping", False), ("", "electronic beeps", True), ("the", "beeping of an alarm", False)],
             [("", "bleeps from a timer", True)]),
    "water_drip": ([("", "dripping water", False), ("", "water drops", True), ("the", "dripping of a tap", False)],
                   [("", "plinking droplets", True)]),
    "footsteps": ([("", "footsteps", True), ("the", "steps of a person", True), ("", "walking", False)],
                  [("the", "footfalls of a pedestrian", True)]),
    "telephone_ring": ([("the", "ringing of a phone", False), ("", "phone rings", True),
                        ("a", "ringing telephone", False)],
                       [("the", "trill of a landline", False)]),
    "wind": ([("", "wind", False), ("the", "sound of wind", False), ("", "gusts of wind", True)],
             [("the", "whoosh of a breeze", False)]),
}

# (kind, value name) -> adjectives (nominal mode) and adverbials (clause mode).
ADJECTIVES: dict[tuple[str, str], Pair] = {
    ("level", "quiet"): (["quiet", "faint", "soft"], ["muted"]),
    ("level", "loud"): (["loud", "strong", "powerful"], ["prominent"]),
    ("pitch", "low"): (["low-pitched", "deep", "low"], ["bassy"]),
    ("pitch", "high"): (["high-pitched", "high"], ["shrill"]),
    ("rate", "slow"): (["slow", "leisurely"], ["unhurried"]),
    ("rate", "fast"): (["fast", "rapid", "quick"], ["hurried"]),
}
ADVERBS: dict[tuple[str, str], Pair] = {
    ("level", "quiet"): (["quietly", "softly", "faintly"], ["in a muted way"]),
    ("level", "loud"): (["loudly", "noisily"], ["prominently"]),
    ("pitch", "low"): (["in a low pitch", "with a deep tone", "at a low pitch"], ["in a bass register"]),
    ("pitch", "high"): (["in a high pitch", "with a high tone", "at a high pitch"], ["in a shrill register"]),
    ("rate", "slow"): (["slowly", "at a slow pace"], ["sluggishly"]),
    ("rate", "fast"): (["rapidly", "quickly", "in quick succession"], ["briskly"]),
}
POSITION_PHRASES: dict[str, Pair] = {
    "start": (["at the start", "at the beginning", "in the first part"], ["in the opening seconds"]),
    "end": (["at the end", "towards the end", "near the end"], ["in the closing moments"]),
    "throughout": (["throughout", "the whole time", "continuously"], ["from start to finish"]),
}
# Clause forms of one mention: {s} subject, {v} verb, {ing}, {be} is/are, {keep} keeps/keep.
CLAUSE_FORMS: Pair = (
    ["{s} {v}", "{s} {be} {ing}", "{s} can be heard {ing}", "there {be} {s} {ing}"],
    ["{s} {keep} {ing}"],
)
# Ordered connectors: the first pair of a chain, then each further link.
ORDER_FIRST: dict[str, Pair] = {
    "clause": (["{a}, then {b}", "{a}, and then {b}", "first {a}, then {b}", "{a} before {b}"],
               ["{a}, and subsequently {b}"]),
    "nominal": (["{a} followed by {b}", "{a}, then {b}", "{a} and then {b}"], ["{a}, succeeded by {b}"]),
}
ORDER_NEXT: dict[str, Pair] = {
    "clause": ([", then {b}", ", and then {b}"], [", and subsequently {b}"]),
    "nominal": ([", then {b}", " followed by {b}"], [", succeeded by {b}"]),
}
# Unordered joins of two or three parts.
JOIN2: dict[str, Pair] = {
    "clause": (["{a} and {b}", "{a}, and {b}"], ["{a}; in addition, {b}"]),
    "nominal": (["{a} and {b}", "{a} as well as {b}"], ["{a} alongside {b}"]),
}
JOIN3: Pair = (["{a}, {b} and {c}", "{a}, {b}, and {c}"], [])
FRAMES: dict[str, Pair] = {
    "clause": (["{x}", "{x} in the recording", "{x} in this clip", "in this recording, {x}", "here, {x}",
                "we can hear that {x}"],
               ["{x}, as captured by a microphone"]),
    "nominal": (["{x} can be heard", "there {be1} {x}", "we hear {x}", "a recording of {x}", "{x} {be} audible",
                 "you can hear {x}"],
                ["this clip features {x}"]),
}


def _all_pairs() -> Iterator[Pair]:
    yield from CLAUSES.values()
    yield from NOMINALS.values()
    yield from ADJECTIVES.values()
    yield from ADVERBS.values()
    yield from POSITION_PHRASES.values()
    yield CLAUSE_FORMS
    for table in (ORDER_FIRST, ORDER_NEXT, JOIN2, FRAMES):
        yield from table.values()
    yield JOIN3


_PLACEHOLDER = re.compile(r"\{\w+\}")
_AGREEMENT = {"{be}": "is are", "{be1}": "is are", "{keep}": "keeps keep"}


def words_of(item: object) -> set[str]:
    """The lower-case words of a phrasing (strings inside tuples included, placeholders dropped)."""
    parts = item if isinstance(item, tuple) else (item,)
    text = " ".join(p for p in parts if isinstance(p, str))
    for slot, forms in _AGREEMENT.items():
        text = text.replace(slot, f" {forms} ")
    return set(re.findall(r"[a-z][a-z'-]*", _PLACEHOLDER.sub(" ", text.lower())))


def train_words() -> set[str]:
    """Every word a development/validation caption can contain."""
    out = {"an", "a"}  # the article fix may turn either into the other
    for train, _ in _all_pairs():
        for item in train:
            out |= words_of(item)
    return out


def eval_only_words() -> set[str]:
    """Words that only held-out (evaluation) phrasings use; each held-out phrasing has at least one."""
    seen = train_words()
    out: set[str] = set()
    for _, held in _all_pairs():
        for item in held:
            new = words_of(item) - seen
            if not new:
                raise AssertionError(f"held-out phrasing {item!r} has no word unseen in training")
            out |= new
    return out
