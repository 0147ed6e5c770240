"""minilib: the library of The Transformer Zoo."""
