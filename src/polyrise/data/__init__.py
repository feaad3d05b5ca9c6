"""Built-in prompt sets (JSONL)."""
