"""Data shared by serving and training: datasets (Fashion-MNIST), product sources
(folders + CSV/JSONL), scanner views, and the one picture preprocessing."""
