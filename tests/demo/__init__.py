"""The local demo (demo.py) and what it shares with its tests (mirror.py)."""
