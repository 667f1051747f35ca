"""Offline word lists that keep word substitutions label-preserving.

- Stopwords and negations are never replaced nor inserted: swapping "not" or "but"
  changes meaning in ways a similarity score does not see.
- A sentiment reference lexicon (VADER, shipped inside the `vadersentiment` wheel) rejects
  candidates whose own polarity opposes the word they replace ("good" -> "bad") or the
  example's true label: embedding neighbourhoods are full of antonyms.
- VADER lists base forms ("fine", "harsh"): an inflected word it does not list is looked
  up through its stems ("finest" -> "fine", "harshly" -> "harsh"), and an un-/dis-/non-
  word it does not list takes the opposite polarity of its stem ("unfunny").
- Antonyms by morphology: a word and the same word with a negating prefix
  ("likable"/"unlikable", "appropriate"/"inappropriate") or with -ful swapped for -less
  ("careful"/"careless") are opposites.
- A short hand list of antonym-ish pairs covers neutral words VADER does not score
  ("often" -> "rarely", "more" -> "less").
"""

from __future__ import annotations

import functools
import importlib.resources


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS: frozenset[str] = _words(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself now of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours
    yourself yourselves also yet still even ever much many however although though s t d
    ll m re ve y 's 're 've 'd 'll 'm n't ca wo lrb rrb
    """
)

NEGATIONS: frozenset[str] = _words(
    """
    not no nor never none nothing nobody nowhere neither without cannot cant dont doesnt
    didnt isnt wasnt arent werent wont wouldnt shouldnt couldnt hardly barely scarcely
    lack lacks lacking little few less least rarely seldom
    """
)

_ANTONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("often", "frequently", "usually", "always", "commonly", "regularly", "sometimes"),
    ("rarely", "seldom", "never", "occasionally", "infrequently"),
    ("more", "most", "greater", "greatest", "increase", "increased", "higher", "highest"),
    ("less", "least", "fewer", "decrease", "decreased", "lower", "lowest"),
    ("many", "much", "lots"),
    ("few", "little"),
    ("best", "better", "finest"),
    ("worst", "worse"),
    ("first", "early", "earlier", "beginning"),
    ("last", "late", "later", "ending"),
    ("strong", "stronger", "strongest", "strongly"),
    ("weak", "weaker", "weakest", "weakly"),
    ("easy", "easier", "easily", "simple", "simpler"),
    ("hard", "harder", "difficult", "complicated"),
    ("happy", "happier", "happiest", "happily"),
    ("sad", "sadder", "saddest", "sadly", "unhappy"),
    ("interesting", "interested", "fascinating", "exciting", "intriguing"),
    ("boring", "bored", "dull", "tedious", "uninteresting"),
    ("sharp", "sharper", "sharpest", "smart", "clever"),
    ("dumb", "stupid", "dull"),
    ("success", "successful", "succeeds", "succeed"),
    ("failure", "fail", "fails", "failed", "unsuccessful"),
    ("fun", "funny", "enjoyable", "entertaining"),
    ("unfunny", "joyless", "tedious"),
    ("cheap", "cheaper", "cheapest", "inexpensive", "modest", "simple"),
    ("lavish", "expensive", "luxurious", "costly", "elaborate", "extravagant"),
    ("love", "loves", "loved", "adore", "like", "likes", "liked"),
    ("hate", "hates", "hated", "despise", "dislike", "dislikes", "disliked"),
    ("deep", "deeper", "deepest", "profound", "profoundly", "deeply"),
    ("shallow", "superficial", "superficially", "shallower", "thin"),
    ("fresh", "new", "original", "novel", "innovative"),
    ("stale", "old", "derivative", "familiar", "tired", "predictable"),
    ("win", "wins", "won", "winning", "winner", "victory"),
    ("lose", "loses", "lost", "losing", "loser", "defeat"),
    ("rich", "richer", "richest", "richly"),
    ("poor", "poorer", "poorest", "poorly"),
    ("smooth", "smoothly", "seamless", "polished"),
    ("rough", "roughly", "clumsy", "clumsily", "awkward", "awkwardly"),
    ("revoked", "revoke", "cancelled", "canceled", "withdrawn"),
    ("renewed", "renew", "granted", "restored", "extended"),
    ("full", "fuller", "complete", "whole"),
    ("empty", "hollow", "incomplete", "partial"),
    ("heavy", "heavier", "heavily", "heavyweight"),
    ("light", "lighter", "lightly", "lightweight"),
    ("finest", "fine", "greatest", "highest"),
    ("slightest", "slight", "smallest", "lowest"),
    ("hero", "heroes", "heroic", "heroine"),
    ("villain", "villains", "villainous"),
    ("laugh", "laughs", "laughter", "laughing", "smile", "smiles"),
    ("cry", "cries", "tears", "weep", "frown"),
)
# Groups 2k and 2k+1 are opposites.
_OPPOSITE: dict[str, frozenset[str]] = {}
for _k in range(0, len(_ANTONYM_GROUPS), 2):
    _a, _b = _ANTONYM_GROUPS[_k], _ANTONYM_GROUPS[_k + 1]
    for _w in _a:
        _OPPOSITE[_w] = _OPPOSITE.get(_w, frozenset()) | frozenset(_b)
    for _w in _b:
        _OPPOSITE[_w] = _OPPOSITE.get(_w, frozenset()) | frozenset(_a)


_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "non-", "mis", "anti")


def _prefix_opposites(a: str, b: str) -> bool:
    """ "likable"/"unlikable": one is the other with a negating prefix."""
    for x, y in ((a, b), (b, a)):
        for prefix in _NEGATING_PREFIXES:
            if len(x) >= 3 and y == prefix + x:
                return True
    return False


def _suffix_opposites(a: str, b: str) -> bool:
    """ "careful"/"careless", "carefully"/"carelessly": -ful against -less, same stem."""
    for x, y in ((a, b), (b, a)):
        for ful, less in (("ful", "less"), ("fully", "lessly"), ("fulness", "lessness")):
            if x.endswith(ful) and y.endswith(less) and x[: -len(ful)] == y[: -len(less)]:
                return True
    return False


def is_antonymish(word: str, candidate: str) -> bool:
    """True if the hand list or the word shapes mark the pair as opposites."""
    w, c = word.lower(), candidate.lower()
    if c in _OPPOSITE.get(w, frozenset()) or w in _OPPOSITE.get(c, frozenset()):
        return True
    return _prefix_opposites(w, c) or _suffix_opposites(w, c)


@functools.cache
def sentiment_lexicon() -> dict[str, float]:
    """VADER's word valences (-4..4), read from the file inside the vadersentiment wheel."""
    text = (
        importlib.resources.files("vaderSentiment")
        .joinpath("vader_lexicon.txt")
        .read_text(encoding="utf-8", errors="replace")
    )
    valences: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            try:
                valences[parts[0].strip().lower()] = float(parts[1])
            except ValueError:
                continue
    return valences


# (suffix, replacement) rules that map an inflected word to candidate base forms
_STEM_RULES = (
    ("iest", "y"), ("ier", "y"), ("ily", "y"), ("ies", "y"), ("ied", "y"),
    ("ingly", ""), ("ingly", "e"), ("edly", ""), ("edly", "e"),
    ("fully", "ful"), ("lessly", "less"), ("ably", "able"), ("ibly", "ible"),
    ("ness", ""), ("ment", ""), ("ly", ""), ("ly", "le"),
    ("est", ""), ("est", "e"), ("er", ""), ("er", "e"),
    ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("es", ""), ("s", ""),
)  # fmt: skip


def stems(word: str) -> list[str]:
    """Candidate base forms of an inflected English word, most specific rule first."""
    w = word.lower()
    out: list[str] = []
    for suffix, repl in _STEM_RULES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            base = w[: -len(suffix)] + repl
            out.append(base)
            if len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "aeiouls":
                out.append(base[:-1])  # "biggest" -> "bigg" -> "big"
    return list(dict.fromkeys(out))


def valence(word: str, lexicon: dict[str, float] | None = None) -> float | None:
    """The word's VADER valence, through its stems or a negating prefix; None if unknown."""
    lexicon = sentiment_lexicon() if lexicon is None else lexicon
    w = word.lower()
    if w in lexicon:
        return lexicon[w]
    for base in stems(w):
        if base in lexicon:
            return lexicon[base]
    for prefix in ("un", "dis", "non"):
        if w.startswith(prefix) and len(w) - len(prefix) >= 4:
            rest = w[len(prefix) :]
            for base in (rest, *stems(rest)):
                if base in lexicon:
                    return -lexicon[base]
    return None


def polarity(word: str, lexicon: dict[str, float] | None = None, neutral: float = 0.5) -> int:
    """-1, 0 or +1: the sign of the word's valence, 0 when |valence| < neutral or unknown."""
    value = valence(word, lexicon) or 0.0
    if abs(value) < neutral:
        return 0
    return 1 if value > 0 else -1


def substitution_preserves_sentiment(
    word: str, candidate: str, label_polarity: int | None = None
) -> bool:
    """Whether swapping `word` for `candidate` can keep the text's sentiment label.

    Rejected: a negation on either side, a candidate of opposite polarity to the word,
    a polar candidate replacing a neutral word against the true label
    (`label_polarity`: +1 positive, -1 negative, None unknown), a polar word replaced
    by a neutral one (that drains the sentiment the label rests on), antonym-ish pairs.
    """
    w, c = word.lower(), candidate.lower()
    if w in NEGATIONS or c in NEGATIONS:
        return False
    if is_antonymish(w, c):
        return False
    pw, pc = polarity(w), polarity(c)
    if pw != 0:
        return pc == pw
    return not (pc != 0 and label_polarity is not None and pc == -label_polarity)
