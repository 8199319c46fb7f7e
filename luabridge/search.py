"""Ranked search over the generated reference: which sections answer a question best.

The index is built from the same metadata as the reference (``luabridge.docs``): one document
per action (its name, summary, description, parameter names and descriptions, examples) and
one per other ``##`` section of each integration's reference (notes, multi-account usage),
plus the built-in guide pages. Scoring is BM25 over words, where a word counts more in the
fields that say most about a section: the action's name (x4), its summary and parameter
names (x2), the rest (x1); an action whose name the question covers gets up to twice the
score. Snake-case names are split, so ``send_event`` matches "send" and "event", and a word
also matches a longer word it starts (``contact`` finds ``contacts``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from luabridge.action import Integration, built
from luabridge.docs import render_markdown, render_section

__all__ = ["MAX_QUERY", "DocIndex", "Hit", "Section", "build_index", "tokens"]

#: Characters of a search query; a longer one is refused (a question fits in far fewer).
MAX_QUERY = 1000

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NAME_RUN = re.compile(r"[a-z0-9_]+")
_UNDERSCORES = re.compile(r"__+")
_STOP = frozenset(
    "a an and are as at be by for from how i in is it of on or the this to what when with "
    "does do can my me".split()
)
_K1 = 1.2
_B = 0.75


def tokens(text: str) -> list[str]:
    """Lower-case words of ``text``; snake_case and camelCase names give their parts too.

    Every pattern here is a single character class, so the time is linear in ``text`` (a
    pattern with nested repeats backtracks quadratically on a long word).
    """
    spaced = _CAMEL.sub(r"\1 \2", text).lower()
    out = []
    for word in _WORD.findall(spaced.replace("_", " ")):
        if word not in _STOP:
            out.append(word)
    # Whole snake_case names too: runs of words joined by single underscores.
    for run in _NAME_RUN.findall(text.lower()):
        for name in _UNDERSCORES.split(run):
            name = name.strip("_")
            if "_" in name:
                out.append(name)
    return out


@dataclass(frozen=True)
class Section:
    """One searchable section: ``topic`` (what ``lua_read_doc`` takes), ``title``, ``summary``,
    ``effect`` (actions only), its Markdown ``text``, and weighted ``fields``."""

    topic: str
    title: str
    summary: str
    text: str
    effect: str | None = None
    fields: tuple[tuple[str, float], ...] = ()
    name_parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    section: Section
    score: float
    matched: tuple[str, ...]

    def to_dict(self, *, with_text: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "topic": self.section.topic,
            "title": self.section.title,
            "summary": self.section.summary,
            "score": round(self.score, 3),
            "matched": list(self.matched),
        }
        if self.section.effect is not None:
            out["effect"] = self.section.effect
        if with_text:
            out["text"] = self.section.text
        return out


@dataclass
class DocIndex:
    """BM25 over :class:`Section` objects; see the module docstring for the weights."""

    sections: list[Section]
    _tf: list[dict[str, float]] = field(default_factory=list, init=False, repr=False)
    _df: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _lengths: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        for section in self.sections:
            tf: dict[str, float] = {}
            for text, weight in section.fields:
                for word in tokens(text):
                    tf[word] = tf.get(word, 0.0) + weight
            self._tf.append(tf)
            self._lengths.append(sum(tf.values()))
            self._df.update(tf.keys())
        self._vocabulary = sorted(self._df)

    def _expand(self, word: str) -> list[tuple[str, float]]:
        """The indexed words a query word matches: itself, and longer words it starts (half)."""
        found = [(word, 1.0)] if word in self._df else []
        if len(word) >= 3:
            found += [(w, 0.5) for w in self._vocabulary if w != word and w.startswith(word)]
        return found

    def search(self, query: str, limit: int = 5) -> list[Hit]:
        """The ``limit`` best sections for ``query``, best first (none when nothing matches)."""
        words = list(dict.fromkeys(tokens(query)))
        if not words or not self.sections:
            return []
        count = len(self.sections)
        average = sum(self._lengths) / count or 1.0
        scored: list[Hit] = []
        for i, section in enumerate(self.sections):
            tf = self._tf[i]
            norm = _K1 * (1 - _B + _B * self._lengths[i] / average)
            score = 0.0
            matched = []
            for word in words:
                best = 0.0
                for term, factor in self._expand(word):
                    freq = tf.get(term, 0.0)
                    if not freq:
                        continue
                    idf = math.log(1 + (count - self._df[term] + 0.5) / (self._df[term] + 0.5))
                    best = max(best, factor * idf * freq * (_K1 + 1) / (freq + norm))
                if best:
                    matched.append(word)
                    score += best
            if score:
                # Sections that match more of the question's words come first, and of two
                # actions the one whose name the question covers best ("create a contact":
                # create_contact before create_contact_property).
                score *= 1 + len(matched) / len(words)
                if section.name_parts:
                    covered = sum(1 for p in section.name_parts if p in words)
                    score *= 1 + covered / len(section.name_parts)
                scored.append(Hit(section, score, tuple(matched)))
        scored.sort(key=lambda h: (-h.score, h.section.topic))
        return scored[:limit]


def _split_sections(markdown: str) -> list[tuple[str, str]]:
    """``(title, text)`` of each ``## `` section of a reference page."""
    parts: list[tuple[str, str]] = []
    title: str | None = None
    lines: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("## "):
            if title is not None:
                parts.append((title, "\n".join(lines).strip().removesuffix("---").strip()))
            title, lines = line[3:].strip(), [line]
        elif title is not None:
            lines.append(line)
    if title is not None:
        parts.append((title, "\n".join(lines).strip()))
    return parts


def _slug(title: str) -> str:
    return "-".join(_WORD.findall(title.lower()))


def build_index(
    integrations: Iterable[Integration],
    accounts: Mapping[str, Sequence[str]],
    guides: Mapping[str, str] = {},
) -> DocIndex:
    """The index of every integration's reference and of the ``guides`` (topic -> Markdown)."""
    sections: list[Section] = []
    for integ in integrations:
        by_title = {a.name: a for a in integ.actions}
        for title, text in _split_sections(render_markdown(integ, accounts.get(integ.name, ()))):
            action = by_title.get(title)
            if action is None:
                body = text.split("\n", 1)[1] if "\n" in text else ""
                first = next((p for p in body.split("\n\n") if p.strip()), "").strip()
                sections.append(
                    Section(
                        topic=f"{integ.name}#{_slug(title)}",
                        title=f"{integ.title}: {title}",
                        summary=" ".join(first.split())[:200],
                        text=text,
                        fields=((title, 3.0), (body, 1.0)),
                    )
                )
                continue
            schema = built(action.input).model_json_schema()
            params = schema.get("properties", {})
            names = " ".join(params)
            described = " ".join(str(p.get("description", "")) for p in params.values())
            examples = " ".join(e.title + " " + e.code for e in action.examples)
            sections.append(
                Section(
                    topic=f"{integ.name}.{action.name}",
                    title=f"{integ.name}.{action.name}",
                    summary=action.summary,
                    text=render_section(integ, action),
                    effect=action.effect,
                    name_parts=tuple(action.name.split("_")),
                    fields=(
                        (action.name, 4.0),
                        (action.summary, 2.0),
                        (names, 2.0),
                        (action.description, 1.0),
                        (described, 1.0),
                        (examples, 0.5),
                    ),
                )
            )
    for topic, text in guides.items():
        for title, body in _split_sections(text):
            sections.append(
                Section(
                    topic=f"{topic}#{_slug(title)}",
                    title=f"Guide: {title}",
                    summary=" ".join(body.split("\n", 1)[-1].split())[:200],
                    text=body,
                    fields=((title, 3.0), (body, 1.0)),
                )
            )
    return DocIndex(sections)
