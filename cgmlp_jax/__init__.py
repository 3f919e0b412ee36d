"""cgmlp_jax: convolutional gated MLPs (gMLP, CgMLP) in JAX/Flax."""
