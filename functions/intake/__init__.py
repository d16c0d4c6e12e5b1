"""The INTAKE stage: its pure transitions and its handler."""
