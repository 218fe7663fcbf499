"""Behaviour judges: deterministic code-spillover detector (and, later, LLM judges)."""
