"""cgmlp_jax: convolutional gated MLPs (gMLP, CgMLP) in JAX/Flax.

Importing the package sets up glibc's malloc for XLA:CPU's per-step buffers (``allocator``: 1.6-1.8x
faster CPU training; ``CGMLP_JAX_MALLOC=default`` turns it off), so import it before JAX starts.
"""
import os

from cgmlp_jax import allocator

allocator.configure()
# TensorFlow only reads data here: keep its start-up log lines (oneDNN, CPU features) off the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
