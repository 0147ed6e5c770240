"""Hidden checks, one module per chapter (``chNN.py``), each exporting ``QUESTIONS``."""
