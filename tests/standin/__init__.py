"""Docker Hub stand-in for hubsync's tests: standin.py (the server), loader.py (content),
wire.py (what both share). See README.md."""
