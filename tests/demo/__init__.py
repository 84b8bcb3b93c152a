"""The local demo (demo.py); what it runs on is the test harness (tests/harness)."""
