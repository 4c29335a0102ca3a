"""qed_lightning: post-training small models to write proofs."""
__version__ = "0.1.0"
