"""Incoming finalize events (both delivery shapes) and outgoing lifecycle CloudEvents."""
