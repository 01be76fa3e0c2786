"""Interception: mitmproxy embedded, with guardproxy's addons."""
