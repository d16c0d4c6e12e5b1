"""Validators, the runtime that turns an input envelope into an output envelope, and launchers."""
