"""Preference training of the next iterate M(t+1) from M(t)."""
