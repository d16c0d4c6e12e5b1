"""Pydantic models and contracts shared by every layer. No I/O, no imports of our other packages."""
