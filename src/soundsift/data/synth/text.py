"""Five captions per clip from a small grammar; each caption carries the atomic assertions it makes.

A caption is planned first (which events it mentions, which of their attributes, positions and orders
it names) and then realised in words. Caption roles per clip: one "full" caption (every event, most
attributes), three "partial" ones (a subset) and one "minimal" one (a single event, nothing else), so
that at least one caption of every clip truly describes other clips too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from soundsift.data.synth import lexicon as lex
from soundsift.data.synth.facts import (
    ASSERTION_INDEX,
    CLASSES,
    NONE,
    POSITIONS,
    STREAM_CAPTIONS,
    VALUE_NAMES,
    Assertion,
    ClipFacts,
    Event,
    position,
    rng_for,
)
from soundsift.data.synth.styles import STYLES, CaptionStyle
from soundsift.names import TEST_SPLIT

CAPTIONS_PER_CLIP = 5
MIN_WORDS, MAX_WORDS = 5, 20
MAX_ASSERTIONS = 17  # 3 events x (presence, 3 attributes, position) + 2 orders
HELD_OUT_P = 0.15  # chance that an evaluation caption uses a held-out phrasing where one exists


@dataclass(frozen=True)
class Caption:
    """A caption's text and the assertions (see synth_facts.ASSERTIONS) it makes about its clip."""

    text: str
    assertions: tuple[Assertion, ...]

    def assertion_ids(self) -> list[int]:
        return [ASSERTION_INDEX[a] for a in self.assertions]


@dataclass
class _Mention:
    event: Event
    attrs: list[tuple[str, int]]  # (kind, value)
    pos: int  # NONE or a POSITIONS index


@dataclass
class _Plan:
    mentions: list[_Mention]
    chains: list[list[_Mention]]  # each chain is in time order; consecutive members are ordered

    def assertions(self) -> tuple[Assertion, ...]:
        out: list[Assertion] = []
        for m in self.mentions:
            c = m.event.cls
            out.append(("has", c, NONE, NONE))
            out += [(kind, c, v, NONE) for kind, v in m.attrs]
            if m.pos != NONE:
                out.append(("pos", c, m.pos, NONE))
        for chain in self.chains:
            out += [("before", a.event.cls, NONE, b.event.cls) for a, b in zip(chain, chain[1:])]
        return tuple(out)


def _before(a: Event, b: Event) -> bool:
    return a.offset <= b.onset


def _longest_chain(mentions: list[_Mention]) -> list[_Mention]:
    """The longest time-ordered run of non-overlapping mentions (ties: the earliest)."""
    ms = sorted(mentions, key=lambda m: m.event.onset)
    best: list[_Mention] = ms[:1]
    n = len(ms)
    for mask in range(1, 1 << n):
        chain = [ms[i] for i in range(n) if mask >> i & 1]
        if len(chain) > len(best) and all(_before(a.event, b.event) for a, b in zip(chain, chain[1:])):
            best = chain
    return best


def _plan(facts: ClipFacts, role: str, rng: np.random.Generator, style: CaptionStyle) -> _Plan:
    events = list(facts.events)
    n = len(events)
    if role == "full":
        chosen = events
    elif role == "minimal":
        chosen = [events[int(rng.integers(n))]]
    else:
        k_p = {1: [1.0], 2: [0.6, 0.4], 3: [0.45, 0.4, 0.15]}[n]
        k = int(rng.choice(n, p=k_p)) + 1
        chosen = [events[i] for i in sorted(rng.choice(n, size=k, replace=False))]
    p_attr, p_pos, p_order = style.probabilities(role)
    mentions = []
    for e in chosen:
        attrs = [(kind, v) for kind, v in (("level", e.level), ("pitch", e.pitch), ("rate", e.rate))
                 if v != NONE and rng.random() < p_attr]
        pos = position(e.onset, e.offset, facts.duration)
        mentions.append(_Mention(e, attrs, pos if pos != NONE and rng.random() < p_pos else NONE))
    rng.shuffle(mentions)
    chains: list[list[_Mention]] = [[m] for m in mentions]
    if len(mentions) > 1 and rng.random() < p_order:
        chain = _longest_chain(mentions)
        if len(chain) > 1:
            chains = [chain] + [[m] for m in mentions if all(m is not c for c in chain)]
            if rng.random() < 0.5:
                chains.reverse()
    return _Plan(mentions, chains)


def _shrink(plan: _Plan, rng: np.random.Generator) -> bool:
    """Drop one optional element (attribute, position, order, extra mention); False if none is left."""
    optional = [(m, "attr") for m in plan.mentions if m.attrs] + [(m, "pos") for m in plan.mentions
                                                                  if m.pos != NONE]
    if optional:
        m, what = optional[int(rng.integers(len(optional)))]
        if what == "attr":
            m.attrs.pop(int(rng.integers(len(m.attrs))))
        else:
            m.pos = NONE
        return True
    if any(len(c) > 1 for c in plan.chains):
        plan.chains = [[m] for c in plan.chains for m in c]
        return True
    if len(plan.mentions) > 1:
        drop = plan.mentions.pop()
        plan.chains = [[m for m in c if m is not drop] for c in plan.chains]
        plan.chains = [c for c in plan.chains if c]
        return True
    return False


class _Realiser:
    """Turns a plan into words; ``held`` allows held-out phrasings (evaluation split only)."""

    def __init__(self, rng: np.random.Generator, held: bool):
        self.rng, self.held = rng, held

    def pick(self, pair: lex.Pair):
        train, held_out = pair
        if self.held and held_out and self.rng.random() < HELD_OUT_P:
            return held_out[int(self.rng.integers(len(held_out)))]
        return train[int(self.rng.integers(len(train)))]

    def mention(self, m: _Mention, mode: str) -> tuple[str, bool]:
        name = m.event.name
        if mode == "clause":
            subj, verb, ing, plural = self.pick(lex.CLAUSES[name])
            form = self.pick(lex.CLAUSE_FORMS)
            text = form.format(s=subj, v=verb, ing=ing, be="are" if plural else "is",
                               keep="keep" if plural else "keeps")
            advs = [self.pick(lex.ADVERBS[kind, VALUE_NAMES[kind][v]]) for kind, v in m.attrs]
            if advs:
                text += " " + (advs[0] if len(advs) == 1 else ", ".join(advs[:-1]) + " and " + advs[-1])
        else:
            det, head, plural = self.pick(lex.NOMINALS[name])
            adjs = [self.pick(lex.ADJECTIVES[kind, VALUE_NAMES[kind][v]]) for kind, v in m.attrs]
            sep = ", " if self.rng.random() < 0.5 else " "
            text = " ".join(w for w in (det, sep.join(adjs), head) if w)
        if m.pos != NONE:
            text += " " + self.pick(lex.POSITION_PHRASES[POSITIONS[m.pos]])
        return text, plural

    def sentence(self, plan: _Plan) -> str:
        mode = "clause" if self.rng.random() < 0.5 else "nominal"
        first_plural = False
        parts = []
        for chain in plan.chains:
            words = []
            for m in chain:
                text, plural = self.mention(m, mode)
                if not parts and not words:
                    first_plural = plural
                words.append(text)
            text = words[0]
            if len(words) > 1:
                text = self.pick(lex.ORDER_FIRST[mode]).format(a=words[0], b=words[1])
                for w in words[2:]:
                    text += self.pick(lex.ORDER_NEXT[mode]).format(b=w)
            parts.append(text)
        if len(parts) == 1:
            body = parts[0]
        elif len(parts) == 2:
            body = self.pick(lex.JOIN2[mode]).format(a=parts[0], b=parts[1])
        else:
            body = self.pick(lex.JOIN3).format(a=parts[0], b=parts[1], c=parts[2])
        several = len(plan.mentions) > 1 or first_plural
        frame = self.pick(lex.FRAMES[mode])
        return frame.format(x=body, be="are" if several else "is", be1="are" if first_plural else "is")


_ARTICLE = re.compile(r"\b([Aa])n? (?=([A-Za-z]))")


def finish(text: str, rng: np.random.Generator) -> str:
    """Fix a/an, collapse spaces, and vary case and final punctuation as people do."""
    text = _ARTICLE.sub(lambda m: m.group(1) + ("n " if m.group(2).lower() in "aeiou" else " "), text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+,", ",", text)
    if rng.random() < 0.7:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.6:
        text += "."
    return text


def n_words(text: str) -> int:
    return len(text.split())


def _caption(facts: ClipFacts, role: str, rng: np.random.Generator, held: bool, taken: set[str],
             style: CaptionStyle) -> Caption:
    plan = _plan(facts, role, rng, style)
    realiser = _Realiser(rng, held)
    for _ in range(60):
        text = finish(realiser.sentence(plan), rng)
        words = n_words(text)
        if words > MAX_WORDS and _shrink(plan, rng):
            continue
        repeated_hear = text.lower().count("hear") > 1  # "we can hear that a dog can be heard ..."
        if MIN_WORDS <= words <= MAX_WORDS and not repeated_hear and text.lower().rstrip(".") not in taken:
            taken.add(text.lower().rstrip("."))
            return Caption(text, plan.assertions())
    raise RuntimeError(f"could not phrase a caption for {[CLASSES[e.cls] for e in facts.events]}")


def make_captions(facts: ClipFacts, seed: int, split: str, index: int,
                  style: CaptionStyle = STYLES["broad"]) -> list[Caption]:
    """The five captions of clip ``index`` of ``split`` (held-out phrasings only in the evaluation split)."""
    rng = rng_for(seed, split, index, STREAM_CAPTIONS)
    roles = [style.roles[i] for i in rng.permutation(len(style.roles))]
    taken: set[str] = set()
    held = split == TEST_SPLIT
    return [_caption(facts, role, rng, held, taken, style) for role in roles]
