"""SMILE training: CelebA reader, preprocessing cache, training loop, vectors, evaluation, benchmark."""
