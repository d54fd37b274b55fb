"""`taskorch server`: the HTTP API and the dashboard (install the `server` extra)."""
