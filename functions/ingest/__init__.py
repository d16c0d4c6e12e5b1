"""The INGEST stage: its pure transitions and its handler."""
