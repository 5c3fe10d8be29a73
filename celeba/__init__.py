"""The CelebA data layer that training and evaluation share: the folder reader, the face cache, the split,
the subset tool and a trained model's folder with its split."""
