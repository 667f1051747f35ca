"""Character-level attack: typos, swaps, homoglyphs; Chinese homophones and look-alikes.

A reader still reads the perturbed text as the original, so the label is preserved by
construction; the edit budget (characters changed) bounds the damage and a similarity
model (char n-gram cosine by default) is measured and can be thresholded too.

- English (per word of >= 3 letters, no stopwords/negations): swap two inner letters,
  drop an inner letter, hit a keyboard neighbour, or replace a letter by a look-alike
  from another script (Latin "a" -> Cyrillic "а").
- Chinese (per CJK character, negations excluded): same-pinyin characters (tones
  included) among the 3,755 common GB2312 level-1 characters, from the offline
  `pypinyin` table, and a built-in table of visually confusable characters.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from rlhf.engine.adversarial.base import AdversarialInputError, Classifier, SimilarityModel
from rlhf.engine.adversarial.lexicon import NEGATIONS, STOPWORDS
from rlhf.engine.adversarial.search import GreedyAttack, SearchConfig
from rlhf.engine.adversarial.similarity import CharNgramSimilarity
from rlhf.engine.adversarial.word import match_case, split_words, word_core

ENGLISH_KINDS = ("swap", "delete", "keyboard", "homoglyph")
CHINESE_KINDS = ("homophone", "similar")

HOMOGLYPHS: dict[str, str] = {
    "a": "а", "c": "с", "e": "е", "i": "і", "j": "ј", "o": "о", "p": "р", "s": "ѕ",
    "x": "х", "y": "у", "l": "ӏ", "h": "һ", "d": "ԁ", "w": "ԝ", "q": "ԛ", "g": "ɡ",
}  # fmt: skip

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


@functools.cache
def keyboard_neighbours() -> dict[str, str]:
    """Letters adjacent on a QWERTY keyboard (same row and the rows above/below)."""
    where = {ch: (r, c) for r, row in enumerate(_KEYBOARD_ROWS) for c, ch in enumerate(row)}
    out: dict[str, str] = {}
    for ch, (r, c) in where.items():
        out[ch] = "".join(
            other
            for other, (r2, c2) in where.items()
            if other != ch and abs(r - r2) <= 1 and abs(c - c2) <= 1
        )
    return out


# Visually confusable simplified characters (形近字), one group per string.
SIMILAR_GROUPS: tuple[str, ...] = (
    "己已巳", "未末", "土士", "日曰", "人入八", "大太犬", "天夭", "千干于", "刀力",
    "王玉主", "贝见", "很狠", "代伐", "折拆析", "免兔", "候侯", "拔拨", "辨辩辫",
    "晴睛请情清", "待侍持特", "住往注柱驻", "历厉", "徒徙", "壁璧", "幕慕墓暮",
    "即既", "买卖", "休体", "问间", "今令", "处外", "鸟乌", "戊戌戍", "准淮", "货贷",
    "泪沮", "喝渴", "券卷", "栗粟", "崇祟", "汩汨", "熟热", "遣遗", "輸输", "拨拔",
    "洒酒", "兵丘", "办为", "东车", "册删", "员贡", "肓盲", "侍诗", "尤龙", "分兮",
    "旦但", "园圆", "坐座", "吧把爸", "妈码吗", "钱线",
    "贵费", "店点", "快块", "慢漫", "值植", "般船", "适造", "送这", "满瞒",
    "意音", "房防", "间简", "味沫", "美羡", "宜谊",
)  # fmt: skip

# Chinese negation and contrast characters: never replaced, never introduced.
CHINESE_PROTECTED = frozenset("不没无非别未莫勿否但却")


def _cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


@functools.cache
def common_chinese_characters() -> str:
    """The 3,755 GB2312 level-1 characters (the common ones), in GB2312 order."""
    chars = []
    for b1 in range(0xB0, 0xD8):
        for b2 in range(0xA1, 0xFF):
            try:
                chars.append(bytes([b1, b2]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return "".join(chars)


@functools.cache
def homophone_table() -> dict[str, str]:
    """Character -> other common characters with exactly the same pinyin and tone."""
    from pypinyin import Style, lazy_pinyin

    chars = common_chinese_characters()
    readings = lazy_pinyin(list(chars), style=Style.TONE3, neutral_tone_with_five=True)
    groups: dict[str, list[str]] = {}
    for ch, reading in zip(chars, readings, strict=True):
        groups.setdefault(reading, []).append(ch)
    return {
        ch: "".join(c for c in groups[reading] if c != ch)
        for ch, reading in zip(chars, readings, strict=True)
    }


@functools.cache
def similar_table() -> dict[str, str]:
    out: dict[str, str] = {}
    for group in SIMILAR_GROUPS:
        for ch in group:
            known = out.get(ch, "")
            out[ch] = known + "".join(c for c in group if c != ch and c not in known)
    return out


@dataclass
class CharAttackConfig(SearchConfig):
    """Character-attack knobs (plus the budget/constraints of `SearchConfig`)."""

    max_edits: int = 3  # perturbed words (English) or characters (Chinese)
    min_similarity: float = 0.0  # perturbations preserve the label by construction
    language: str = "auto"  # "en", "zh", or "auto" (zh when >= 30% of letters are CJK)
    kinds: tuple[str, ...] = field(default_factory=lambda: ENGLISH_KINDS + CHINESE_KINDS)
    variants_per_unit: int = 12  # perturbations tried per word/character
    seed: int = 0  # which perturbations are sampled when there are more

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.language not in ("auto", "en", "zh"):
            raise AdversarialInputError(f"language must be auto, en or zh, got {self.language!r}")
        unknown = set(self.kinds) - set(ENGLISH_KINDS + CHINESE_KINDS)
        if unknown:
            raise AdversarialInputError(f"unknown perturbation kinds {sorted(unknown)}")


def detect_language(text: str) -> str:
    letters = [ch for ch in text if ch.isalpha()]
    cjk = sum(_cjk(ch) for ch in letters)
    return "zh" if letters and cjk / len(letters) >= 0.3 else "en"


def english_typos(word: str, kinds: tuple[str, ...]) -> list[str]:
    """Every single-character typo of `word` of the given kinds (case kept)."""
    out: list[str] = []
    n = len(word)
    if "swap" in kinds:
        out += [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(1, n - 2)]
    if "delete" in kinds:
        out += [word[:i] + word[i + 1 :] for i in range(1, n - 1)]
    if "keyboard" in kinds:
        near = keyboard_neighbours()
        for i in range(1, n - 1):
            keys = near.get(word[i].lower(), "")
            out += [word[:i] + match_case(word[i], k) + word[i + 1 :] for k in keys]
    if "homoglyph" in kinds:
        out += [
            word[:i] + HOMOGLYPHS[ch] + word[i + 1 :]
            for i, ch in enumerate(word)
            if ch in HOMOGLYPHS
        ]
    return [w for w in dict.fromkeys(out) if w != word]


class CharAttack(GreedyAttack):
    """Greedy character-level attack (English words or Chinese characters)."""

    config: CharAttackConfig

    def __init__(
        self,
        classifier: Classifier,
        similarity: SimilarityModel | None = None,
        config: CharAttackConfig | None = None,
    ) -> None:
        similarity = similarity or CharNgramSimilarity()
        super().__init__(classifier, similarity, config or CharAttackConfig())
        self._language = "en"

    def prepare(self, text: str) -> None:
        lang = self.config.language
        self._language = detect_language(text) if lang == "auto" else lang

    def attack(self, text: str, label: int):  # type: ignore[override]
        self.prepare(text)
        return super().attack(text, label)

    def segment(self, text: str) -> list[str]:
        return list(text) if self._language == "zh" else split_words(text)

    def attackable(self, unit: str) -> bool:
        if self._language == "zh":
            return _cjk(unit) and unit not in CHINESE_PROTECTED
        core = word_core(unit)[1].lower()
        return len(core) >= 3 and core.isalpha() and core not in STOPWORDS and core not in NEGATIONS

    def variants(self, unit: str, label: int) -> list[str]:
        kinds = self.config.kinds
        if self._language == "zh":
            out = []
            if "similar" in kinds:
                out += list(similar_table().get(unit, ""))
            if "homophone" in kinds:
                out += list(homophone_table().get(unit, ""))
            out = [c for c in dict.fromkeys(out) if c != unit and c not in CHINESE_PROTECTED]
        else:
            lead, core, trail = word_core(unit)
            out = [lead + typo + trail for typo in english_typos(core, kinds)]
        if len(out) > self.config.variants_per_unit:
            rng = random.Random(f"{self.config.seed}:{unit}")
            out = rng.sample(out, self.config.variants_per_unit)
        return out


def char_edit_count(original: str, perturbed: str) -> int:
    """Characters that differ, position by position, plus the length difference."""
    return sum(a != b for a, b in zip(original, perturbed, strict=False)) + abs(
        len(original) - len(perturbed)
    )
