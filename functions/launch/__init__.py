"""The LAUNCH stage: its pure transitions and its handler."""
