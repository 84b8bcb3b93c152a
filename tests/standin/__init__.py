"""Docker Hub stand-in for hubsync's tests: standin.py (the server), loader.py (content),
keepalive.py (shared HTTP client helper). See README.md."""
