import numpy as np
import torch

import vae.vectors as latent


def test_mean_difference_recovers_a_planted_direction():
    rng = np.random.default_rng(0)
    labels = rng.random(4000) < 0.3
    direction = np.zeros(64, np.float32)
    direction[5] = 2.0
    z = rng.normal(size=(4000, 64)).astype(np.float32) + labels[:, None] * direction
    v = latent.mean_difference(z, labels)
    assert abs(v[5] - 2.0) < 0.15 and np.abs(np.delete(v, 5)).max() < 0.2
    assert latent.projection_auc(z, np.where(labels, 1, -1), v) > 0.8


def test_cap_limits_samples_per_side_with_a_fixed_seed():
    z = np.arange(100, dtype=np.float32)[:, None].repeat(2, 1)
    labels = np.arange(100) < 50
    a = latent.mean_difference(z, labels, cap=5, seed=1)
    assert np.array_equal(a, latent.mean_difference(z, labels, cap=5, seed=1))
    assert not np.array_equal(a, latent.mean_difference(z, labels, cap=5, seed=2))
    assert np.allclose(latent.mean_difference(z, labels, cap=50), -50)


def test_balanced_weights_remove_a_confounder():
    # smiling is confounded with a "gender" offset on dim 0; the true smile lives on dim 1
    rng = np.random.default_rng(0)
    male = rng.random(20000) < 0.5
    smiling = np.where(male, rng.random(20000) < 0.2, rng.random(20000) < 0.8)
    z = np.stack([male * 3.0, smiling * 1.0], 1) + rng.normal(scale=0.1, size=(20000, 2))
    plain = latent.mean_difference(z, smiling, cap=20000)
    balanced = latent.mean_difference(z, smiling, cap=20000, weights=latent.balanced_weights(male * 2 + smiling))
    assert abs(plain[0]) > 1.0 and abs(balanced[0]) < 0.1 and abs(balanced[1] - 1) < 0.05


def test_project_out_leaves_no_component_along_others():
    v = np.array([1.0, 1.0, 1.0], np.float32)
    out = latent.project_out(v, [np.array([1.0, 0, 0]), np.array([1.0, 1.0, 0])])
    assert np.allclose(out, [0, 0, 1], atol=1e-6)


def test_a_latent_shifts_by_whole_step_units_and_the_vectors_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 64)).astype(np.float32)
    labels = np.where(rng.random((500, 2)) < 0.5, 1, -1)
    vectors = latent.compute_vectors(z, labels, ["Smiling", "Male"])
    vectors.save(tmp_path)
    loaded = latent.AttributeVectors.load(tmp_path)
    assert loaded.names == ["Smiling", "Male"] and np.array_equal(loaded.vectors, vectors.vectors)
    smile = np.load(tmp_path / "smile_vector.npy")
    assert smile.dtype == np.float32 and smile.shape == (64,) and np.array_equal(smile, vectors.vector("Smiling"))
    step = loaded.step("Smiling")
    moved = latent.shift_latent(torch.from_numpy(z), step, 2.0).numpy()
    unit = step.numpy() / np.linalg.norm(step.numpy())
    shift = (moved - z) @ unit
    assert np.allclose(shift, 2.0 * (z @ unit).std(), rtol=1e-4)  # alpha counts stds of the projection
    assert torch.equal(latent.shift_latent(torch.from_numpy(z), step, 0.0), torch.from_numpy(z))
