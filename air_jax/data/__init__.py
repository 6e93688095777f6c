"""Real MNIST (fetched once from PyPI, then offline), Multi-MNIST scenes and input pipelines."""
