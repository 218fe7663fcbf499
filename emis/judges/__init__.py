"""Behaviour judges: the deterministic code-spillover detector, an OpenAI-compatible LLM judge, offline coherence."""
