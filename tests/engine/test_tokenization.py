"""Language-aware pre-tokenisation and BPE tokenizer training (English + Chinese)."""

from __future__ import annotations

from rlhf.engine.tokenization import (
    detect_language,
    pretokenize,
    save_tokenizer,
    train_tokenizer,
)

CORPUS = [
    "the movie was great and the acting was great",
    "the movie was terrible and the plot was terrible",
    "这部电影很好看，演员很好",
    "这部电影很难看，剧情很差",
    "服务很好，房间很干净",
    "服务太差，房间很脏",
] * 5


def test_pretokenize_splits_cjk_per_character():
    assert pretokenize("I loved it, 电影很好!") == [
        "I",
        "loved",
        "it",
        ",",
        "电",
        "影",
        "很",
        "好",
        "!",
    ]
    assert detect_language("这部电影很好看") == "zh"
    assert detect_language("a great movie") == "en"


def test_trained_tokenizer_round_trips_english_and_chinese(tmp_path):
    tokenizer = train_tokenizer(CORPUS, vocab_size=400, min_frequency=1)
    for text in ["the movie was great", "这部电影很好看", "mixed 电影 text"]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # Frequent words merge; CJK stays one token per character (no cross-character merges).
    assert "Ġmovie" in tokenizer.get_vocab()
    zh_tokens = tokenizer.tokenize("电影很好")
    assert len(zh_tokens) == 4


def test_unseen_characters_fall_back_to_bytes(tmp_path):
    tokenizer = train_tokenizer(CORPUS, vocab_size=400, min_frequency=1)
    text = "𠀀 naïve 😊"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_saved_in_hugging_face_format(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = train_tokenizer(CORPUS, vocab_size=400, min_frequency=1)
    save_tokenizer(tokenizer, tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert loaded("服务很好")["input_ids"] == tokenizer("服务很好")["input_ids"]
    assert loaded.pad_token == "<pad>"
