"""Helpers for the grader tests: notebook code as namespaces, wrong answers, test notebooks."""
