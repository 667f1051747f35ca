"""Character-level attacks: English typos/homoglyphs and Chinese homophones/look-alikes."""

from __future__ import annotations

import pytest
from pypinyin import Style, lazy_pinyin

from rlhf.engine.adversarial import AdversarialInputError, CharAttack, CharAttackConfig
from rlhf.engine.adversarial.char import (
    CHINESE_PROTECTED,
    detect_language,
    english_typos,
    homophone_table,
    similar_table,
)


def test_chinese_homophone_attack_keeps_pinyin_and_flips(keyword_classifier):
    attack = CharAttack(keyword_classifier, config=CharAttackConfig(kinds=("homophone",)))
    result = attack.attack("这家酒店的服务很好，不贵", 1)
    assert result.success and result.predicted_after == 0 and result.label == 1
    assert result.edits == 1 and len(result.perturbed) == len(result.original)
    tone = Style.TONE3
    assert lazy_pinyin(result.perturbed, style=tone) == lazy_pinyin(result.original, style=tone)
    assert "不" in result.perturbed  # negations are never touched


def test_chinese_similar_characters_and_budget(keyword_classifier):
    text = "质量太差了，差评，差差差"
    attack = CharAttack(keyword_classifier, config=CharAttackConfig(max_edits=2))
    result = attack.attack(text, 0)
    # five occurrences of 差 need more than two edits: no success, never a relabel
    assert not result.success and result.edits <= 2 and result.label == 0
    assert "差" in similar_table() or "差" in homophone_table()


def test_chinese_tables_are_sane():
    table = homophone_table()
    assert "郝" in table["好"]
    assert not (set("".join(table.values())) & CHINESE_PROTECTED - set(table))
    assert "己" in similar_table()["已"]
    assert detect_language("这部电影很好看") == "zh" and detect_language("a fine film") == "en"


def test_english_typos_flip_keyword_model(keyword_classifier):
    result = CharAttack(keyword_classifier).attack("What a great movie", 1)
    assert result.success and result.edits == 1
    ((old, new),) = result.changes
    assert old == "great" and new != old and len(new) in (4, 5)


def test_english_typo_kinds():
    typos = english_typos("great", ("swap",))
    assert "graet" in typos and "great" not in typos
    assert all(len(t) == 4 for t in english_typos("great", ("delete",)))
    assert "greаt" in english_typos("great", ("homoglyph",))  # Cyrillic a


def test_char_config_errors():
    with pytest.raises(AdversarialInputError, match="language"):
        CharAttackConfig(language="fr")
    with pytest.raises(AdversarialInputError, match="unknown perturbation kinds"):
        CharAttackConfig(kinds=("teleport",))
