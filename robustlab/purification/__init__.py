"""Purification defences: a purifier in front of a frozen classifier (CARSO, AToP)."""
