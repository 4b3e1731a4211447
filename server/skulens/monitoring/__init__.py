"""What the server reports about itself: Prometheus metrics (`metrics.py`) and embedding drift
(`drift.py`), exported on an HTTP port (`--metrics-port`)."""
