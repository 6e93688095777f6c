"""air_jax: Attend, Infer, Repeat (Eslami et al., 2016) in JAX/Flax."""
