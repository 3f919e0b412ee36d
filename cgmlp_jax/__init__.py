"""cgmlp_jax: convolutional gated MLPs (gMLP, CgMLP) in JAX/Flax.

Importing the package sets up glibc's malloc for XLA:CPU's per-step buffers (``allocator``: 1.6-1.8x
faster CPU training; ``CGMLP_JAX_MALLOC=default`` turns it off), so import it before JAX starts.
"""
from cgmlp_jax import allocator

allocator.configure()
