"""Configurations (ml_collections) for air_jax runs."""
