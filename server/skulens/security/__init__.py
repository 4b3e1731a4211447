"""What stands between the network and the rest of the server: which image bytes are decoded
(`images.py`) and how bytes that are not a valid message are answered (`wire.py`)."""
